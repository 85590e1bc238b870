"""Time and peak memory of listing AliProducts-size data (2.5 M images, 50,030 classes).

    python benchmarks/listing_scale.py                          # full size: ~190 MB of listings in a temp dir
    python benchmarks/listing_scale.py --entries 100000 --json listing.json

Writes ``train.json`` (release format) and ``train_list.txt`` (PaddleClas list) of the same synthetic entries
(32-hex-digit image ids, zero-padded class ids, classes of uneven size), then reads each in a fresh Python process
and reports wall time, CPU time and peak resident memory (``resource.getrusage`` maxrss) over the process's size
after ``import prodrec.data.aliproducts`` (torch included). Readers:

* ``json``: :func:`prodrec.data.aliproducts.read_aliproducts` on ``train.json`` (chunked parse, full validation);
* ``list``: the same on ``train_list.txt`` (:mod:`prodrec.data.lists`'s parser);
* ``json.load``: for comparison, ``json.load`` of the whole file and one path and label per entry, no checks.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

READERS = ("json", "list", "json.load")


def write_listings(root: Path, entries: int, classes: int, seed: int = 0) -> None:
    """``root/train.json`` and ``root/train_list.txt`` listing the same ``entries`` images."""
    rng = np.random.default_rng(seed)
    labels = np.sort(rng.choice(classes, size=entries, p=rng.dirichlet(np.full(classes, 2.0))))
    labels[:classes] = np.arange(min(classes, entries))  # every class has an image
    labels.sort()
    ids = rng.bytes(16 * entries)
    names = [f"{ids[16 * i:16 * i + 16].hex()}.jpg" for i in range(entries)]
    folders = [f"{label:05d}" for label in labels.tolist()]
    with open(root / "train.json", "w", encoding="utf-8") as file:
        file.write('{"images": [')
        file.write(", ".join(f'{{"image_id": "{name}", "class_id": "{folder}"}}' for name, folder in zip(names, folders)))
        file.write("]}")
    with open(root / "train_list.txt", "w", encoding="utf-8") as file:
        file.writelines(f"train/{folder}/{name} {int(folder)}\n" for name, folder in zip(names, folders))


def measure(reader: str, root: str, classes: int) -> dict:
    """Read the listing with ``reader`` in this process; time, memory and size of the result."""
    from prodrec.data import read_aliproducts

    before = _max_rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    if reader == "json.load":
        from prodrec.data import ImageList

        with open(os.path.join(root, "train.json"), encoding="utf-8") as file:
            entries = json.load(file)["images"]
        paths = [os.path.join(root, "train", str(e["class_id"]), e["image_id"]) for e in entries]
        labels = [int(e["class_id"]) for e in entries]
        images = ImageList(paths, labels, tuple(map(str, range(classes))))
    else:
        images = read_aliproducts(root, "train.json" if reader == "json" else "train_list.txt", num_classes=classes)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = _max_rss_mb()
    return {"reader": reader, "images": len(images), "classes": images.num_classes, "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "peak_rss_mb": round(peak), "import_rss_mb": round(before),
            "listing_mb": round(peak - before)}


def _max_rss_mb() -> float:
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kilobytes / (1 << 20) if sys.platform == "darwin" else kilobytes / 1024  # macOS reports bytes


def _run(*args: str) -> str:
    """Standard output of this script run with ``args`` in a fresh process."""
    return subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True).stdout


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=2_500_000, help="images listed (default 2,500,000)")
    parser.add_argument("--classes", type=int, default=50_030, help="classes (default 50,030)")
    parser.add_argument("--readers", nargs="+", choices=READERS, default=list(READERS))
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--measure", nargs=3, metavar=("READER", "ROOT", "CLASSES"), help=argparse.SUPPRESS)
    parser.add_argument("--write", metavar="ROOT", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        reader, root, classes = args.measure
        print(json.dumps(measure(reader, root, int(classes))))
        return {}
    if args.write:
        write_listings(args.write, args.entries, args.classes)
        return {}
    if not 1 <= args.classes <= args.entries:
        parser.error("need 1 <= --classes <= --entries")
    results = {"command": " ".join(["python", "benchmarks/listing_scale.py", *sys.argv[1:]]),
               "entries": args.entries, "classes": args.classes, "runs": []}
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        # Linux keeps a process's peak RSS across exec: write the listings in a child, so that this process stays
        # small and the measuring children (forked from it) start from a low peak.
        _run("--write", root, "--entries", str(args.entries), "--classes", str(args.classes))
        sizes = {name: os.path.getsize(os.path.join(root, name)) / 1e6 for name in ("train.json", "train_list.txt")}
        print(f"wrote {args.entries:,} entries over {args.classes:,} classes in {time.perf_counter() - start:.1f} s "
              f"(train.json {sizes['train.json']:.0f} MB, train_list.txt {sizes['train_list.txt']:.0f} MB)")
        results["file_mb"] = {name: round(size, 1) for name, size in sizes.items()}
        print(f"{'reader':<10} {'images':>10} {'wall s':>7} {'CPU s':>7} {'listing MB':>11} {'peak RSS MB':>12}")
        for reader in args.readers:
            run = json.loads(_run("--measure", reader, root, str(args.classes)).splitlines()[-1])
            results["runs"].append(run)
            print(f"{reader:<10} {run['images']:>10,} {run['wall_s']:>7.2f} {run['cpu_s']:>7.2f} "
                  f"{run['listing_mb']:>11} {run['peak_rss_mb']:>12}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
