"""The detection commands: ``prodrec make-shelves`` (synthetic shelf and tray photos with COCO boxes)."""
from __future__ import annotations

import argparse
from typing import Callable, Dict

__all__ = ["add_commands"]


def add_commands(commands: "argparse._SubParsersAction") -> Dict[str, Callable[[argparse.Namespace], int]]:
    """Add ``make-shelves`` to a ``prodrec`` subparsers object; returns ``{command: handler}``."""
    shelves = commands.add_parser("make-shelves", help="write synthetic shelf and tray photos with COCO product boxes")
    shelves.add_argument("root", metavar="DIR", help="folder for images/ and annotations.json")
    shelves.add_argument("--scenes", type=int, default=200, help="photos to write (default 200)")
    shelves.add_argument("--products", metavar="FOLDER",
                         help="product pictures: an In-shop folder or <label>/<image> folders (default: synthetic)")
    shelves.add_argument("--synthetic-items", type=int, default=200,
                         help="synthetic products when no --products (labels as make-synthetic's, same --seed)")
    shelves.add_argument("--width", type=int, default=640)
    shelves.add_argument("--height", type=int, default=480)
    shelves.add_argument("--seed", type=int, default=0)
    shelves.add_argument("--quiet", action="store_true", help="no progress bar")
    return {"make-shelves": _make_shelves}


def _make_shelves(args: argparse.Namespace) -> int:
    from prodrec.data import make_shelves

    info = make_shelves(args.root, scenes=args.scenes, products=args.products, synthetic_items=args.synthetic_items,
                        seed=args.seed, width=args.width, height=args.height, progress=not args.quiet)
    print(f"wrote {info.scenes} scenes with {info.boxes} product boxes ({info.boxes / info.scenes:.1f} a photo) of "
          f"{info.products} products; annotations: {info.annotations}")
    return 0
