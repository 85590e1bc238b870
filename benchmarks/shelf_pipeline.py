"""Seconds per photo of detect -> recognise on shelf photos holding about 30 and about 150 products.

    OMP_NUM_THREADS=2 python benchmarks/shelf_pipeline.py --detector det/checkpoints/best.pt --index gallery/

Synthetic shelf scenes are made (``make_shelves``; 1024 x 768, so that dense ones reach 150 products) and
the photos whose annotated product count is nearest each ``--products`` target are timed: the detector
alone (``ProductDetector.detect``), then the whole pipeline (``Recognizer(detector=...).recognize``: detect,
crop, embed every crop in one batch, search, suppress duplicates), ``--repeat`` times each, median.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", required=True, help="a detector file or best.pt")
    parser.add_argument("--index", required=True, help="gallery folder (its embedder.pt embeds the crops)")
    parser.add_argument("--products", type=int, nargs="+", default=[30, 150], help="products a photo to time")
    parser.add_argument("--scenes", type=int, default=40, help="scenes made to choose from")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", help="folder for the scenes and results.json (default: a temporary one)")
    return parser


def median_seconds(call, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import tempfile

    from prodrec.data import load_image, make_shelves, read_coco
    from prodrec.gallery import GalleryIndex, Recognizer
    from prodrec.cli.models import MODEL_FILE, load_model
    from prodrec.models import ProductDetector

    output = Path(args.output or tempfile.mkdtemp(prefix="shelf-pipeline-"))
    info = make_shelves(output / "scenes", scenes=args.scenes, width=1024, height=768, seed=1, progress=False)
    scenes = read_coco(info.annotations, output / "scenes")
    counts = np.array([len(boxes) for boxes in scenes.boxes])
    detector = ProductDetector.load(args.detector).eval()
    gallery = GalleryIndex.load(args.index)
    recognizer = Recognizer(load_model(str(Path(args.index) / MODEL_FILE), "cpu"), gallery, detector=detector)
    rows = []
    for target in args.products:
        chosen = int(np.argmin(np.abs(counts - target)))
        photo = load_image(scenes.paths[chosen])
        recognizer.recognize(photo)  # warm-up
        detect = median_seconds(lambda: detector.detect([photo]), args.repeat)
        regions = recognizer.recognize(photo)
        whole = median_seconds(lambda: recognizer.recognize(photo), args.repeat)
        rows.append({"target": target, "annotated": int(counts[chosen]), "regions": len(regions),
                     "detect_seconds": detect, "pipeline_seconds": whole, "photo": scenes.paths[chosen]})
        print(json.dumps(rows[-1]), flush=True)
    command = "python benchmarks/shelf_pipeline.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(f"\ndetector {detector.settings.name} at {detector.settings.image_size} px, gallery of {len(gallery)} images, "
          f"1024 x 768 photos, median of {args.repeat}\n")
    print("| products in the photo | regions recognised | detect s | detect + embed + search s | photos/s |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['annotated']} | {row['regions']} | {row['detect_seconds']:.3f} | {row['pipeline_seconds']:.3f} | "
              f"{1 / row['pipeline_seconds']:.2f} |")
    print(f"\nCommand: `{command}`")
    (output / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
