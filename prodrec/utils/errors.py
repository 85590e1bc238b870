"""The errors prodrec raises for input it refuses; each message says how to fix the input.

``ProdrecError`` subclasses ``ValueError`` (what prodrec 0.1 raised), so ``except ValueError`` keeps
working; catch ``ProdrecError`` for "prodrec refused this input or state". The command line prints
these as one-line messages and lets anything else (a bug) raise with its traceback.
"""
from __future__ import annotations

__all__ = ["ProdrecError", "ProdrecTypeError", "ProdrecRuntimeError"]


class ProdrecError(ValueError):
    """Input or state that prodrec refuses; the message names it and says how to fix it."""


class ProdrecTypeError(ProdrecError, TypeError):
    """An argument of the wrong type."""


class ProdrecRuntimeError(ProdrecError, RuntimeError):
    """A state of the world that stops the work (a locked folder, a full disk, a non-finite loss)."""
