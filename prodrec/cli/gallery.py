"""The ``prodrec index build|add|remove|info`` and ``prodrec search`` commands.

A gallery folder made by ``prodrec index build`` holds the saved :class:`~prodrec.gallery.GalleryIndex` and
``embedder.pt``, a copy of the model that embedded it, which ``add`` and ``search`` use unless
``--checkpoint`` names another file. Heavy libraries load inside the handlers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Dict
from prodrec.cli.calibrate import add_calibrate, describe_calibration
from prodrec.cli.migrate import add_backend_args, add_migrate, new_gallery, store_gallery
from prodrec.cli.models import MODEL_FILE, load_detector_model, load_model
from prodrec.utils import ProdrecError, atomic_write

__all__ = ["add_commands", "MODEL_FILE", "load_model"]

def add_commands(commands: "argparse._SubParsersAction") -> Dict[str, Callable[[argparse.Namespace], int]]:
    """Add ``index`` and ``search`` to a ``prodrec`` subparsers object; returns ``{command: handler}``."""
    index = commands.add_parser("index", help="build, update, migrate and inspect a product gallery (faiss or Milvus)")
    actions = index.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="embed gallery images with a model and index them")
    build.add_argument("--checkpoint", required=True, help="best.pt, last.pt or a saved Embedder")
    _add_image_args(build)
    build.add_argument("--type", "--index-type", dest="type",
                       help="faiss: Flat (exact, default), HNSW32, IVF{n},Flat or IVF{n},PQ{m}; Milvus: FLAT (default), "
                            "HNSW, HNSW_SQ, IVF_FLAT, IVF_SQ8, AUTOINDEX")
    add_backend_args(build)
    build.add_argument("--metric", choices=["ip", "l2"], default="ip", help="ip: cosine similarity (default)")
    build.add_argument("--output", required=True, help="gallery folder to write (a new one, or with --force)")
    build.add_argument("--force", action="store_true", help="replace the gallery already in --output")
    build.add_argument("--no-features", action="store_true", help="do not keep features (rebuild impossible)")
    build.add_argument("--nprobe", type=int, help="IVF lists searched per query (faiss default 1, Milvus 16)")
    build.add_argument("--ef-search", type=int, help="HNSW search depth (faiss default 16, Milvus 64)")

    add = actions.add_parser("add", help="embed more images and add them to a gallery")
    add.add_argument("--index", required=True, help="gallery folder")
    add.add_argument("--checkpoint", help=f"model or its export (default: the gallery's {MODEL_FILE})")
    _add_image_args(add)
    _add_wait_arg(add)

    remove = actions.add_parser("remove", help="remove images by id or all images of products")
    remove.add_argument("--index", required=True, help="gallery folder")
    which = remove.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="ids", type=int, nargs="+", help="image ids")
    which.add_argument("--label", dest="labels", nargs="+", help="product labels")
    remove.add_argument("--rebuild", action="store_true", help="rebuild from kept features (needed for HNSW)")
    _add_wait_arg(remove)

    calibrate = add_calibrate(actions, MODEL_FILE)
    migrate = add_migrate(actions, MODEL_FILE)

    info = actions.add_parser("info", help="describe a gallery")
    info.add_argument("--index", required=True, help="gallery folder")
    info.add_argument("--json", action="store_true", help="print as JSON")

    search = commands.add_parser("search", help="recognise the products in images with a gallery")
    search.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    search.add_argument("--index", required=True, help="gallery folder (from prodrec index build)")
    search.add_argument("--checkpoint", help=f"model or its export (default: the gallery's {MODEL_FILE})")
    search.add_argument("--k", type=int, default=5, help="gallery matches per region (default 5)")
    search.add_argument("--threshold", type=float,
                        help="accept the top-1 at this score (default: the gallery's calibrated threshold, else 0.5)")
    search.add_argument("--inshop-boxes", metavar="ROOT",
                        help="crop each image to its box in ROOT/Anno/list_bbox_inshop.txt (images under ROOT)")
    search.add_argument("--rerank", choices=["qe", "k-reciprocal"],
                        help="re-rank the matches: query expansion or k-reciprocal (scores change meaning)")
    search.add_argument("--detector", metavar="DET.pt", help="find the products in each photo first (prodrec detect "
                                                             "train); one region per product plus the whole photo")
    search.add_argument("--draw", metavar="DIR", help="write each photo with its regions drawn to DIR/<name>.png")
    search.add_argument("--filter", metavar="EXPR", help='match only gallery images it accepts, e.g. \'label in ["a", "b"]\' '
                                                       "(fields id, label, name, path; docs/gallery.md)")
    search.add_argument("--device", default="auto")
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    return {"index": lambda args: {"build": _build, "add": _add, "remove": _remove, "info": _info,
                                   "calibrate": calibrate, "migrate": migrate}[args.index_command](args),
            "search": _search}


def _add_image_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--list", help="gallery list: 'path label [product name]' lines")
    source.add_argument("--folder", help="folder of <label>/<image> files")
    parser.add_argument("--image-root", help="folder the --list paths are relative to (default: the list's)")
    parser.add_argument("--allow-outside-root", action="store_true",
                        help="accept --list paths that resolve outside the image root (../, absolute, symlinks out)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_wait_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", action="store_true",
                        help="refuse, instead of waiting, while another process writes the gallery")


def _waiting(folder: str) -> Callable[[str], None]:
    def say(owner: str) -> None:
        print(f"prodrec: waiting for process {owner}, which is writing the gallery {folder}", file=sys.stderr,
              flush=True)
    return say


def _images(args: argparse.Namespace):
    from prodrec.gallery import read_gallery_list

    if (args.image_root or args.allow_outside_root) and not args.list:
        raise ProdrecError("--image-root and --allow-outside-root apply to --list only")
    if not args.list:
        return args.folder
    return read_gallery_list(args.list, image_root=args.image_root, allow_outside_root=args.allow_outside_root)


def _build(args: argparse.Namespace) -> int:
    from prodrec.models import ExportedEmbedder
    from prodrec.gallery import GalleryFolder, add_embedded, embed_images

    folder = GalleryFolder(args.output)
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise ProdrecError(f"--output {args.output} is a file; give a folder for the gallery")
    if folder.exists() and not args.force:
        raise ProdrecError(f"{args.output} already holds a gallery; add images to it with `prodrec index add --index "
                           f"{args.output}`, replace it with --force, or choose another --output folder")
    model = load_model(args.checkpoint, args.device)
    if isinstance(model, ExportedEmbedder):
        raise ProdrecError(f"{args.checkpoint} is an exported model, but the gallery folder keeps the PyTorch model "
                           f"({MODEL_FILE}); build with best.pt or a saved Embedder, then add and search with either")
    embedded = embed_images(model, _images(args), batch_size=args.batch_size, progress=not args.quiet)
    gallery = new_gallery(args, dim=model.embedding_size, metric=args.metric, keep_features=not args.no_features)
    if not gallery.is_trained:
        gallery.train(embedded.features)
    add_embedded(gallery, embedded)
    if args.nprobe is not None:
        gallery.nprobe = args.nprobe
    if args.ef_search is not None:
        gallery.ef_search = args.ef_search
    with folder.writing(on_wait=_waiting(args.output)):
        if folder.exists() and not args.force:  # another build got there first
            raise ProdrecError(f"{args.output} now holds a gallery another process built; rerun with --force to "
                               "replace it")
        store_gallery(folder, gallery)
        atomic_write(folder.directory / MODEL_FILE, model.save)
    where = f" at {gallery.uri}, collection {gallery.collection}" if gallery.backend == "milvus" else ""
    print(f"indexed {len(gallery)} images of {len(set(embedded.labels))} products ({gallery.index_type}{where}) in "
          f"{args.output}")
    return 0


def _add(args: argparse.Namespace) -> int:
    from prodrec.gallery import add_embedded, check_embedder, embed_images, open_gallery, update_gallery

    model = load_model(args.checkpoint or os.path.join(args.index, MODEL_FILE), args.device)
    check_embedder(open_gallery(args.index), model)  # before embedding: the wrong model fails at once
    embedded = embed_images(model, _images(args), batch_size=args.batch_size, progress=not args.quiet)
    with update_gallery(args.index, wait=not args.no_wait, on_wait=_waiting(args.index)) as gallery:
        ids = add_embedded(gallery, embedded)
    print(f"added {len(ids)} images (ids {ids[0]}..{ids[-1]}); the gallery holds {len(gallery)}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from prodrec.gallery import update_gallery

    with update_gallery(args.index, wait=not args.no_wait, on_wait=_waiting(args.index)) as gallery:
        removed = gallery.remove(ids=args.ids, label=args.labels, rebuild=args.rebuild)
    print(f"removed {removed} images; the gallery holds {len(gallery)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from prodrec.gallery import gallery_backend

    backend = gallery_backend(args.index)
    gallery = backend.load()
    count, labels = len(gallery), gallery.labels
    info = {"folder": str(args.index), **backend.describe(), "index_type": gallery.index_type,
            "metric": gallery.metric, "dim": gallery.dim, "images": count, "products": len(set(labels.tolist())),
            "nprobe": gallery.nprobe, "ef_search": gallery.ef_search, "features_kept": gallery.keep_features,
            "embedder": gallery.embedder_info, "changes": gallery.changes,
            "calibration": None if gallery.calibration is None else {
                **gallery.calibration.to_json(), "changes_since": gallery.changes - gallery.calibration.changes}}
    if "file_bytes" in info:
        info["bytes_per_image"] = round(sum(info["file_bytes"].values()) / max(count, 1))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key == "calibration":
            value = ("none: searches accept at 0.5; choose one with prodrec index calibrate" if value is None
                     else describe_calibration(gallery.calibration, gallery.changes))
        print(f"{key:16}{value}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from prodrec.gallery import Recognizer, open_gallery, parse_filter, read_inshop_boxes

    where = parse_filter(args.filter).expression if args.filter is not None else None  # refused before the model loads
    gallery = open_gallery(args.index)
    model = load_model(args.checkpoint or os.path.join(args.index, MODEL_FILE), args.device)
    detector = None
    if args.detector:
        if args.inshop_boxes:
            raise ProdrecError("--detector finds the boxes; --inshop-boxes gives them: choose one")
        detector = load_detector_model(args.detector, args.device)
    recognizer = Recognizer(model, gallery, k=args.k, threshold=args.threshold, rerank=args.rerank, detector=detector)
    boxes = {}
    if args.inshop_boxes:
        known = read_inshop_boxes(args.inshop_boxes)
        keys = {image: Path(os.path.relpath(os.path.abspath(image), args.inshop_boxes)).as_posix()
                for image in args.images}
        missing = [image for image, key in keys.items() if key not in known]
        if missing:
            raise ProdrecError(f"no box in {args.inshop_boxes}/Anno/list_bbox_inshop.txt for {len(missing)} "
                               f"images: {missing[:20]}")
        boxes = {image: [known[key]] for image, key in keys.items()}
    results = [(image, recognizer.recognize(image, boxes.get(image), filter=where)) for image in args.images]
    if args.draw:
        from prodrec.gallery import draw_recognitions

        for number, (image, regions) in enumerate(results):
            draw_recognitions(image, regions, Path(args.draw) / f"{number:03d}_{Path(image).stem}.png")
    if args.json:
        print(json.dumps([{"image": image, "regions": [region.to_json() for region in regions]}
                          for image, regions in results], indent=2))
        return 0
    for image, regions in results:
        for region in regions:
            name = f" ({region.name})" if region.name else ""
            print(f"{image} {list(region.box)}: {region.label}{name} score {region.score:.3f}")
            for rank, match in enumerate(region.matches, start=1):
                print(f"  {rank}. {match.label} {match.score:.3f} id {match.id}{f' ({match.name})' if match.name else ''}")
    return 0
