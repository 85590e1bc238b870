"""The ``prodrec export`` and ``prodrec visualize`` commands (heavy libraries load inside the handlers)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable, Dict
from prodrec.utils import ProdrecError

__all__ = ["add_commands", "CATEGORY_FILE"]

CATEGORY_FILE = "recall_by_category"


def add_commands(commands: "argparse._SubParsersAction") -> Dict[str, Callable[[argparse.Namespace], int]]:
    """Add ``export`` and ``visualize`` to a ``prodrec`` subparsers object; returns ``{command: handler}``."""
    export = commands.add_parser("export", help="write the embedder as ONNX or TorchScript, checked against PyTorch")
    export.add_argument("output", metavar="OUT", help="file to write, e.g. embedder.onnx; OUT.json gets the "
                                                      "preprocessing")
    export.add_argument("--checkpoint", required=True, help="best.pt, last.pt or a saved Embedder")
    export.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="default: onnx")
    export.add_argument("--opset", type=int, help="ONNX opset version (default: torch's)")
    export.add_argument("--atol", type=float, default=1e-4,
                        help="largest accepted difference to PyTorch's embeddings (default 1e-4)")
    export.add_argument("--no-check", action="store_true", help="skip running the exported model against PyTorch")

    visualize = commands.add_parser("visualize", help="draw queries with their top-k gallery images, worst first, "
                                                      "and Recall@1 per category")
    visualize.add_argument("--checkpoint", required=True, help="best.pt, last.pt or a saved Embedder")
    visualize.add_argument("--data-root", required=True, help="data folder (In-shop layout by default)")
    visualize.add_argument("--dataset", choices=["inshop", "list", "folder", "aliproducts"],
                           help="layout of --data-root")
    visualize.add_argument("--output", required=True, help="folder for the PNG pages and the category table")
    visualize.add_argument("--k", type=int, default=5, help="gallery images per query (default 5)")
    visualize.add_argument("--queries", type=int, default=32, help="queries drawn, the worst ones (default 32)")
    visualize.add_argument("--per-page", type=int, default=8, help="queries per PNG (default 8)")
    visualize.add_argument("--depth", type=int, default=100,
                           help="ranks searched for each query's first right match, for the order (default 100)")
    visualize.add_argument("--image-size", type=int, default=96, help="tile size in pixels (default 96)")
    visualize.add_argument("--batch-size", type=int, default=64)
    visualize.add_argument("--device", default="auto")
    visualize.add_argument("--quiet", action="store_true", help="no progress bars")
    return {"export": _export, "visualize": _visualize}


def _export(args: argparse.Namespace) -> int:
    from prodrec.models import export_embedder, metadata_path
    from prodrec.models import Embedder

    model = Embedder.load(args.checkpoint)
    path = export_embedder(model, args.output, format=args.format, opset=args.opset, check=not args.no_check,
                           atol=args.atol)
    meta = json.loads(metadata_path(path).read_text(encoding="utf-8"))
    opset = f", opset {meta['onnx_opset']}" if meta["onnx_opset"] else ""
    print(f"wrote {path} ({args.format}{opset}, input [batch, 3, {model.image_size}, {model.image_size}] -> "
          f"[batch, {model.embedding_size}]) and {metadata_path(path)}")
    if "check" in meta:
        check = meta["check"]
        print(f"max abs difference to PyTorch {check['max_abs_diff']:.3g} on batches of "
              f"{' and '.join(map(str, check['batch_sizes']))} (atol {check['atol']:g})")
    return 0


def _visualize(args: argparse.Namespace) -> int:
    from prodrec.data import read_splits
    from prodrec.retrieval import extract_embeddings
    from prodrec.models import Embedder
    from prodrec.retrieval import knn_search
    from prodrec.train import resolve_device
    from prodrec.retrieval import category_table, draw_results, inshop_category, recall_at_1_by_category

    for name in ("k", "queries", "per_page", "depth", "image_size", "batch_size"):
        if getattr(args, name) < 1:
            raise ProdrecError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    device = resolve_device(args.device)
    model = Embedder.load(args.checkpoint).to(device)
    splits = read_splits(args.dataset or "inshop", args.data_root)
    options = dict(batch_size=args.batch_size, progress=not args.quiet)
    query = extract_embeddings(model, splits.query, desc="embed query", **options)
    gallery = extract_embeddings(model, splits.gallery, desc="embed gallery", **options)
    depth = min(max(args.depth, args.k), len(splits.gallery))
    scores, ranked = knn_search(query, gallery, depth)
    output = Path(args.output)
    pages = draw_results(splits.query, splits.gallery, ranked, scores, output, k=min(args.k, depth),
                         per_page=args.per_page, max_queries=args.queries, image_size=args.image_size)
    print(f"drew the {min(args.queries, len(splits.query))} worst of {len(splits.query)} queries into "
          f"{len(pages)} pages: {pages[0]} ... {pages[-1].name}")
    if any(inshop_category(path) is None for path in splits.query.paths):
        print("no per-category table: the query paths are not In-shop's img/GENDER/Category/id/file")
        return 0
    rows = recall_at_1_by_category(splits.query, splits.gallery, ranked)
    table = category_table(rows)
    (output / f"{CATEGORY_FILE}.md").write_text(table, encoding="utf-8")
    (output / f"{CATEGORY_FILE}.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(table, end="")
    return 0
