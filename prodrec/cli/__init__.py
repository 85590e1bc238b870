"""The ``prodrec`` command line: one module per command group; ``main`` is the entry point.

Importing it is cheap: each command imports torch and the rest of prodrec when it runs.
"""
from prodrec.cli.app import build_parser, main, train_overrides

__all__ = ["main", "build_parser", "train_overrides"]
