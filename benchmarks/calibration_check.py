"""Does a calibrated threshold keep its promise on products it never saw?

    python benchmarks/calibration_check.py --data-root /tmp/photoset --checkpoint run/checkpoints/best.pt \\
        --far 0.1 0.05 0.02 0.01 --seeds 0 1 2 3 4 --output /tmp/calibration_check

The test products of a set (``--dataset list``: ``photo_products.py``'s real-photo set; or ``inshop``) are split
per seed into three groups: **gallery** products (their gallery-list images form a ``Flat`` gallery), products
whose images are the **calibration unknowns**, and products whose images are the **test unknowns**.
``prodrec.gallery.calibrate_gallery`` chooses the threshold from the gallery's leave-one-out queries and the
calibration unknowns, exactly as ``prodrec index calibrate --far F --unknown LIST`` does. The threshold is then
applied to queries it never saw: the query-list images of the gallery products and every image of the test
unknowns. The script prints, per target and seed, the calibration's FAR and the measured FAR on those unseen
queries (and FRR), and the mean and spread over seeds; ``--plot`` draws the first seed's calibration.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="a set with query and gallery lists of test products")
    parser.add_argument("--dataset", default="list", choices=["list", "inshop", "folder"], help="its layout")
    parser.add_argument("--checkpoint", required=True, help="the model (best.pt or a saved Embedder)")
    parser.add_argument("--far", type=float, nargs="+", default=[0.1, 0.05, 0.02, 0.01], help="FAR targets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--gallery-share", type=float, default=0.5, help="share of test products in the gallery")
    parser.add_argument("--plot", help="draw seed 0's calibration at the second FAR target into this image")
    parser.add_argument("--output", help="folder for results.json")
    parser.add_argument("--batch-size", type=int, default=64)
    return parser


def split_products(products: np.ndarray, seed: int, gallery_share: float) -> tuple:
    """Gallery, calibration-unknown and test-unknown products: the rest split in half."""
    shuffled = np.random.default_rng(seed).permutation(products)
    cut = int(round(gallery_share * len(shuffled)))
    rest = shuffled[cut:]
    return shuffled[:cut], rest[:len(rest) // 2], rest[len(rest) // 2:]


def check_seed(features: dict, labels: dict, seed: int, fars: list, gallery_share: float, plot: str = None) -> list:
    from prodrec.gallery import GalleryIndex, calibrate_gallery, held_out_outcomes
    from prodrec.retrieval import TopOneOutcomes, error_rates, plot_error_rates

    products = np.unique(labels["query"])
    shelf, calibration_unknown, test_unknown = split_products(products, seed, gallery_share)
    every, every_label = (np.concatenate([features["query"], features["gallery"]]),
                          np.concatenate([labels["query"], labels["gallery"]]))
    gallery = GalleryIndex(features["gallery"].shape[1])
    on_shelf = np.isin(labels["gallery"], shelf)
    gallery.add(features["gallery"][on_shelf], labels["gallery"][on_shelf].astype(str))
    unknown = every[np.isin(every_label, calibration_unknown)]
    outcomes = held_out_outcomes(gallery, unknown)
    known_queries = np.isin(labels["query"], shelf)
    found = gallery.search(features["query"][known_queries], k=1)
    unseen = gallery.search(every[np.isin(every_label, test_unknown)], k=1)
    test = TopOneOutcomes(found.scores[:, 0], found.labels[:, 0] == labels["query"][known_queries].astype(str),
                          unseen.scores[:, 0])
    rows = []
    for far in fars:
        calibration = calibrate_gallery(gallery, far=far, outcomes=outcomes)
        measured = error_rates(test, [calibration.threshold])
        unknown_accepted = float(np.mean(test.unknown_scores >= calibration.threshold))
        rows.append({"seed": seed, "far_target": far, "threshold": calibration.threshold,
                     "calibration_far": calibration.far, "calibration_frr": calibration.frr,
                     "calibration_queries": calibration.known_queries + calibration.unknown_queries,
                     "measured_far": float(measured["far"][0]), "measured_frr": float(measured["frr"][0]),
                     "unseen_unknowns_accepted": unknown_accepted, "test_queries": test.queries})
        if plot and far == fars[min(1, len(fars) - 1)]:
            plot_error_rates(outcomes[0], plot, calibration, title=f"calibration, seed {seed}: FAR target {far:g}")
    return rows


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from prodrec.data import read_splits
    from prodrec.models import Embedder
    from prodrec.retrieval import extract_embeddings

    model = Embedder.load(args.checkpoint).eval()
    splits = read_splits(args.dataset, args.data_root)
    features = {name: extract_embeddings(model, getattr(splits, name), batch_size=args.batch_size, desc=name)
                for name in ("query", "gallery")}
    labels = {name: getattr(splits, name).labels for name in ("query", "gallery")}
    rows = []
    for seed in args.seeds:
        rows += check_seed(features, labels, seed, args.far, args.gallery_share, args.plot if seed == args.seeds[0] else None)
    print(f"$ python benchmarks/calibration_check.py {shlex.join(sys.argv[1:] if argv is None else argv)}")
    print(f"{len(np.unique(labels['query']))} test products; per seed {rows[0]['calibration_queries']} calibration "
          f"queries, {rows[0]['test_queries']} unseen test queries\n")
    print("| FAR target | threshold (mean) | FAR on calibration | measured FAR on unseen | unseen unknowns accepted"
          " | measured FRR |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for far in args.far:
        group = [row for row in rows if row["far_target"] == far]
        spread = {key: _mean_sd([row[key] for row in group]) for key in
                  ("threshold", "calibration_far", "measured_far", "unseen_unknowns_accepted", "measured_frr")}
        print(f"| {far:g} | {spread['threshold']} | {spread['calibration_far']} | {spread['measured_far']} | "
              f"{spread['unseen_unknowns_accepted']} | {spread['measured_frr']} |")
    if args.output:
        Path(args.output).mkdir(parents=True, exist_ok=True)
        (Path(args.output) / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


def _mean_sd(values: list) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


if __name__ == "__main__":
    sys.exit(main())
