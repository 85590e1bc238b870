"""``prodrec index calibrate``: choose a gallery's acceptance threshold for a false-accept target and store it
(:mod:`prodrec.gallery.calibrate`)."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
from typing import Callable

from prodrec.utils import ProdrecError

__all__ = ["add_calibrate", "describe_calibration"]


def add_calibrate(actions: "argparse._SubParsersAction", model_file: str) -> Callable[[argparse.Namespace], int]:
    """Add ``calibrate`` to ``prodrec index``'s actions; returns its handler."""
    calibrate = actions.add_parser("calibrate", help="choose the acceptance threshold for a false-accept rate and "
                                                     "store it in the gallery")
    calibrate.add_argument("--index", required=True, help="gallery folder")
    calibrate.add_argument("--far", type=float, default=0.01,
                           help="false-accept rate to stay within: wrong products named per query (default 0.01)")
    calibrate.add_argument("--unknown", metavar="LIST",
                           help="'path [label]' list of images of products the gallery does not hold (the open set)")
    calibrate.add_argument("--image-root", help="folder the --unknown paths are relative to (default: the list's)")
    calibrate.add_argument("--allow-outside-root", action="store_true",
                           help="accept --unknown paths that resolve outside the image root")
    calibrate.add_argument("--checkpoint", help=f"model for --unknown images (default: the gallery's {model_file})")
    calibrate.add_argument("--plot", metavar="FILE", help="draw FAR and FRR against the threshold and the DET curve")
    calibrate.add_argument("--json", action="store_true", help="print one JSON object")
    calibrate.add_argument("--dry-run", action="store_true", help="choose and report, but do not store")
    calibrate.add_argument("--batch-size", type=int, default=64)
    calibrate.add_argument("--device", default="auto")
    calibrate.add_argument("--quiet", action="store_true", help="no progress bar")
    calibrate.add_argument("--no-wait", action="store_true",
                           help="refuse, instead of waiting, while another process writes the gallery")
    return lambda args: _calibrate(args, model_file)


def _calibrate(args: argparse.Namespace, model_file: str) -> int:
    from prodrec.gallery import calibrate_gallery, held_out_outcomes, open_gallery, update_gallery
    from prodrec.retrieval import check_far, plot_error_rates

    check_far(args.far)
    if (args.image_root or args.allow_outside_root or args.checkpoint) and not args.unknown:
        raise ProdrecError("--image-root, --allow-outside-root and --checkpoint apply to --unknown images only")
    if args.plot:
        _require_matplotlib()
    unknown = _unknown_features(args, open_gallery(args.index), model_file) if args.unknown else None
    if args.dry_run:
        gallery = open_gallery(args.index)
        outcomes = held_out_outcomes(gallery, unknown)
        calibration = calibrate_gallery(gallery, far=args.far, outcomes=outcomes)
    else:
        with update_gallery(args.index, wait=not args.no_wait) as gallery:
            outcomes = held_out_outcomes(gallery, unknown)
            calibration = calibrate_gallery(gallery, far=args.far, outcomes=outcomes)
            gallery.calibration = calibration
    if args.plot:
        plot_error_rates(outcomes[0], args.plot, calibration, title=f"{args.index}: FAR target {args.far:g}")
    result = {**calibration.to_json(), "stored": not args.dry_run, "index": args.index, "plot": args.plot}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(describe_calibration(calibration, calibration.changes))
    print("stored in the gallery" if not args.dry_run else "not stored (--dry-run)",
          f"; plot: {args.plot}" if args.plot else "", sep="")
    return 0


def describe_calibration(calibration, changes: int) -> str:
    """One line on a stored threshold: value, rates, counts, date and the gallery changes made since."""
    frr = "n/a (no product has two images)" if calibration.frr is None else f"{calibration.frr:.4f}"
    since = changes - calibration.changes
    age = "calibrated on this gallery" if since == 0 else (
        f"calibrated on an older gallery: {since} images added or removed since; run prodrec index calibrate again")
    return (f"threshold {calibration.threshold:.6g}: FAR {calibration.far:.4f} (target {calibration.far_target:g}, "
            f"95% bound {calibration.far_upper_95:.4f}), FRR {frr}, on {calibration.known_queries} held-out gallery "
            f"images + {calibration.unknown_queries} unknown-product images ({calibration.skipped_products} "
            f"single-image products skipped), {calibration.calibrated_at}; {age}")


def _unknown_features(args: argparse.Namespace, gallery, model_file: str):
    from prodrec.cli.models import load_model
    from prodrec.data import read_unknown_list
    from prodrec.gallery import check_embedder, embed_images

    entries = read_unknown_list(args.unknown, image_root=args.image_root, allow_outside_root=args.allow_outside_root)
    held = sorted({label for _, label in entries if label is not None} & set(gallery.labels.tolist()))
    if held:
        raise ProdrecError(f"{args.unknown} lists images of {len(held)} products the gallery holds, e.g. {held[:5]}; "
                           "--unknown takes images of products it does not hold")
    model = load_model(args.checkpoint or os.path.join(args.index, model_file), args.device)
    check_embedder(gallery, model)
    images = [(path, label or "unknown", None) for path, label in entries]
    return embed_images(model, images, batch_size=args.batch_size, progress=not args.quiet).features


def _require_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError("--plot needs matplotlib: pip install matplotlib (or prodrec[plot])")

