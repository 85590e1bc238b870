"""What one durable gallery change costs: a one-image add through ``GalleryIndex.update`` (lock, load the newest
generation, add, write the next generation, fsync, switch), by gallery size.

    python benchmarks/gallery_add.py                       # 20, 1,000, 10,000 and 100,000 images of 512-d
    python benchmarks/gallery_add.py --sizes 20 1000 --dim 64
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import numpy as np


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 1_000, 10_000, 100_000], help="gallery images")
    parser.add_argument("--dim", type=int, default=512, help="feature dimension")
    parser.add_argument("--repeat", type=int, default=3, help="adds per size; the fastest counts")
    args = parser.parse_args(argv)
    if min(args.sizes) < 1 or args.dim < 1 or args.repeat < 1:
        parser.error("--sizes, --dim and --repeat must be positive")
    from prodrec.gallery import GalleryFolder, GalleryIndex

    print("| gallery | generation on disk | one add |\n| ---: | ---: | ---: |")
    rng = np.random.default_rng(0)
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="prodrec-add-") as scratch:
            folder = Path(scratch) / "gallery"
            gallery = GalleryIndex(args.dim)
            gallery.add(rng.standard_normal((size, args.dim)), [f"sku-{i % 500}" for i in range(size)])
            gallery.save(folder)
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                with GalleryIndex.update(folder) as current:
                    current.add(rng.standard_normal((1, args.dim)), ["new"])
                times.append(time.perf_counter() - started)
            files = sum(path.stat().st_size for path in GalleryFolder(folder).current_folder().iterdir())
            print(f"| {size:,} images | {files / 2**20:.1f} MiB | {min(times) * 1000:,.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
