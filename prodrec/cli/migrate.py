"""``prodrec index migrate`` and the backend options of ``prodrec index build``: a gallery in its folder's faiss
generations or in a Milvus collection (:mod:`prodrec.gallery.backends`)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
from typing import Any, Callable

from prodrec.utils import ProdrecError, atomic_write

__all__ = ["add_backend_args", "add_migrate", "new_gallery", "store_gallery"]


def add_backend_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=["faiss", "milvus"], default="faiss",
                        help="faiss: the gallery folder holds the index (default); milvus: a Milvus collection does")
    parser.add_argument("--uri", help="Milvus: a Milvus Lite folder (./gallery.db; default GALLERY/milvus.db) or a "
                                      "server (http://HOST:19530; credentials from $PRODREC_MILVUS_TOKEN[_FILE])")
    parser.add_argument("--collection", help="Milvus collection name (default prodrec_gallery)")


def add_migrate(actions: "argparse._SubParsersAction", model_file: str) -> Callable[[argparse.Namespace], int]:
    """Add ``migrate`` to ``prodrec index``'s actions; returns its handler."""
    migrate = actions.add_parser("migrate", help="copy a gallery to another backend (faiss <-> Milvus) and check "
                                                 "that both answer alike")
    migrate.add_argument("source", metavar="SRC", help="gallery folder to copy (left unchanged)")
    migrate.add_argument("--to", dest="backend", choices=["faiss", "milvus"], required=True, help="target backend")
    migrate.add_argument("--output", required=True, help="new gallery folder")
    migrate.add_argument("--uri", help="Milvus URI (see prodrec index build --help)")
    migrate.add_argument("--collection", help="Milvus collection name (default prodrec_gallery)")
    migrate.add_argument("--type", "--index-type", dest="type", help="index type on the target (default: exact)")
    migrate.add_argument("--force", action="store_true", help="replace a gallery in --output (and its collection)")
    migrate.add_argument("--json", action="store_true", help="print one JSON object")
    migrate.add_argument("--quiet", action="store_true", help="no progress bar")
    return lambda args: _migrate(args, model_file)


def new_gallery(args: argparse.Namespace, *, dim: int, metric: str, keep_features: bool = True) -> Any:
    """An empty gallery on ``args.backend`` for the folder ``args.output``, from the command's options."""
    from prodrec.gallery import GalleryIndex, create_milvus_gallery

    if args.backend == "faiss":
        if args.uri or args.collection:
            raise ProdrecError("--uri and --collection name a Milvus gallery; add --backend milvus (or --to milvus)")
        return GalleryIndex(dim, index_type=args.type or "Flat", metric=metric, keep_features=keep_features)
    if not keep_features:
        raise ProdrecError("a Milvus gallery keeps every vector; drop --no-features")
    return create_milvus_gallery(args.output, dim=dim, uri=args.uri, collection=args.collection,
                                 index_type=args.type or "FLAT", metric=metric, replace=args.force)


def store_gallery(folder: Any, gallery: Any) -> None:
    """Make ``gallery`` the gallery of ``folder`` (a :class:`~prodrec.gallery.GalleryFolder` whose write lock is
    held): a faiss gallery as its next generation, a Milvus one as its ``backend.json``; whatever the folder
    held before goes once the new one is in place."""
    from prodrec.gallery import BACKEND_FILE, record_milvus_gallery

    if gallery.backend == "faiss":
        folder.save(gallery)
        (folder.directory / BACKEND_FILE).unlink(missing_ok=True)
    else:
        gallery.commit()
        record_milvus_gallery(folder.directory, gallery)
        folder.remove_generations()


def _migrate(args: argparse.Namespace, model_file: str) -> int:
    from prodrec.gallery import GalleryFolder, compare_galleries, copy_gallery, open_gallery

    if os.path.abspath(args.source) == os.path.abspath(args.output):
        raise ProdrecError("--output must be a new gallery folder: a migration leaves SRC as it is")
    folder = GalleryFolder(args.output)
    if folder.exists() and not args.force:
        raise ProdrecError(f"{args.output} already holds a gallery; replace it with --force or choose another --output")
    source = open_gallery(args.source)
    target = new_gallery(args, dim=source.dim, metric=source.metric)
    copied = copy_gallery(source, target, progress=not args.quiet)
    with folder.writing():
        store_gallery(folder, target)
        model = os.path.join(args.source, model_file)
        if os.path.isfile(model):
            atomic_write(folder.directory / model_file, lambda path: shutil.copyfile(model, path))
    check = compare_galleries(source, open_gallery(args.output))
    result = {"source": args.source, "output": args.output, "backend": target.backend, "index_type": target.index_type,
              "images": copied, "check": check}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    agreement = check["top1_label_agreement"]
    print(f"migrated {copied} images to {target.backend} ({target.index_type}) in {args.output}; "
          + ("nothing to compare" if agreement is None else
             f"on {check['queries']} of its images searched in both, the top-1 label agreed for {agreement:.1%}, "
             f"the top-{5} labels for {check['topk_labels_agreement']:.1%}, scores within {check['max_score_difference']:.2g}"))
    return 0
