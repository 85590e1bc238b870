"""Which detector for products on shelves, on this machine? Speed and accuracy of every registered detector.

    OMP_NUM_THREADS=2 python benchmarks/detector_choice.py --output /tmp/detector_choice --minutes 6

For each detector in ``prodrec.models.DETECTORS`` (or ``--detectors``): photos/s of ``detect`` at
``--image-size`` (one photo a call, after a warm-up), seconds per training step (batches of 4), and the COCO
metrics on held-out synthetic shelf scenes after training for ``--minutes`` of wall time from scratch
(``prodrec detect train``'s defaults otherwise: the epochs are cut to fit the budget). Every detector sees
the same scenes in the same order. Prints a Markdown table and writes ``results.json``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder for the scenes, runs and results.json")
    parser.add_argument("--detectors", nargs="*", help="names (default: every registered detector)")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--scenes", type=int, default=240, help="synthetic scenes (a tenth validate)")
    parser.add_argument("--random-objects", type=int, default=200,
                        help="random objects among the synthetic products (DataLoader.synthetic_random_objects)")
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget per detector")
    parser.add_argument("--speed-photos", type=int, default=10, help="photos timed for detect")
    return parser


def photos_per_second(detector, photos) -> float:
    detector.eval().detect(photos[:1])
    started = time.perf_counter()
    for photo in photos:
        detector.detect([photo])
    return len(photos) / (time.perf_counter() - started)


def step_seconds(name: str, image_size: int, train) -> float:
    """Seconds of one training step on 4 photos (the mean of 3 after one warm-up)."""
    from prodrec.data import BoxDataset, collate_boxes, detection_train_transform
    from prodrec.models import DetectorSettings, ProductDetector

    detector = ProductDetector(DetectorSettings(name, image_size=image_size)).train()
    dataset = BoxDataset(train, detection_train_transform(image_size))
    images, targets, _ = collate_boxes([dataset[i] for i in range(4)])
    optimizer = torch.optim.AdamW(detector.parameters(), lr=1e-4)
    times = []
    for _ in range(4):
        started = time.perf_counter()
        loss = sum(detector(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return float(np.mean(times[1:]))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from prodrec.data import load_image
    from prodrec.detection import detection_data, train_detector
    from prodrec.config import DetectionConfig, load_config
    from prodrec.models import DETECTORS, DetectorSettings, ProductDetector

    output = Path(args.output)
    names = args.detectors or sorted(DETECTORS)
    base = load_config({"Global": {"output_dir": str(output / "scenes-run")},
                        "DataLoader": {"synthetic_scenes": args.scenes,
                                       "synthetic_random_objects": args.random_objects}}, schema=DetectionConfig)
    train, val = detection_data(base, output / "scenes-run", progress=False)
    photos = [load_image(path) for path in val.paths[:args.speed_photos]]
    rows = []
    for name in names:
        torch.manual_seed(0)
        speed = photos_per_second(ProductDetector(DetectorSettings(name, image_size=args.image_size)), photos)
        step = step_seconds(name, args.image_size, train)
        steps = args.minutes * 60 / step
        epochs = max(1, int(steps // (len(train) // 4)))
        config = load_config({"Global": {"epochs": epochs, "output_dir": str(output / name), "eval_interval": epochs},
                              "Arch": {"name": name, "image_size": args.image_size},
                              "Optimizer": {"lr": {"warmup_epoch": min(1.0, epochs / 4)}}}, schema=DetectionConfig)
        started = time.perf_counter()
        result = train_detector(config, data=(train, val), overwrite=True, progress=False)
        rows.append({"detector": name, "photos_per_second": speed, "step_seconds": step, "epochs": epochs,
                     "train_minutes": (time.perf_counter() - started) / 60, **result.metrics})
        print(json.dumps(rows[-1]), flush=True)
    command = "python benchmarks/detector_choice.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(f"\n{len(train)} training / {len(val)} validation scenes ({train.num_boxes} / {val.num_boxes} boxes), "
          f"{args.image_size} px, {args.minutes:g} min of training each\n")
    print("| detector | photos/s | s/step (4 photos) | epochs | AP50 | AP75 | mAP | AR@100 | AR@300 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['detector']} | {row['photos_per_second']:.2f} | {row['step_seconds']:.2f} | {row['epochs']} | "
              f"{row['map_50']:.3f} | {row['map_75']:.3f} | {row['map']:.3f} | {row['mar_100']:.3f} | "
              f"{row['mar_300']:.3f} |")
    print(f"\nCommand: `{command}`")
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
