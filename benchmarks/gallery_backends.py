"""Gallery backends side by side: faiss (Flat, HNSW32, IVF) in a gallery folder and Milvus Lite (FLAT, HNSW,
IVF_FLAT) through prodrec's gallery API, at 100k and 1M 512-d vectors.

For each backend and size, in a fresh process (so peak RSS is its own): build time (every vector added and
searchable), add-one-product latency (5 images of a new product, acknowledged durably and then found by a
search: faiss through ``GalleryIndex.update``, which loads and saves the gallery's generation, as ``prodrec
serve`` and ``prodrec index add`` do; Milvus through ``MilvusGallery.add``), search queries/s at batch 1 and
64, p99 latency at batch 1, recall@10 against exact search, peak RSS and disk. The vectors are unit vectors
around ``N / 10`` random centres (10 "photos" per "product", as a shop's gallery; the generator of
``index_tradeoff.py``), not real embeddings, which do not fit this machine at these sizes.

    OMP_NUM_THREADS=2 python benchmarks/gallery_backends.py --sizes 100000 1000000 --output runs/backends
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
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_tradeoff import clustered_vectors  # noqa: E402

CONFIGS = {"faiss Flat": ("faiss", "Flat"), "faiss HNSW32": ("faiss", "HNSW32"), "faiss IVF": ("faiss", "IVF"),
           "Milvus Lite FLAT": ("milvus", "FLAT"), "Milvus Lite HNSW": ("milvus", "HNSW"),
           "Milvus Lite IVF_FLAT": ("milvus", "IVF_FLAT")}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200, help="queries for recall and batch-64 search")
    parser.add_argument("--seconds", type=float, default=20, help="time limit of each search measurement")
    parser.add_argument("--output", default="runs/gallery_backends")
    parser.add_argument("--one", nargs=2, metavar=("CONFIG", "SIZE"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def folder_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def measure_one(config: str, size: int, args: argparse.Namespace) -> Dict[str, Any]:
    """One backend at one size, in this process."""
    from prodrec.gallery import (GalleryIndex, create_milvus_gallery, record_milvus_gallery, update_gallery)
    from prodrec.retrieval import new_faiss_index

    backend, index_type = CONFIGS[config]
    data = clustered_vectors(size, args.queries, args.dim, spread=1.0, seed=0, centres=max(1, size // 10))
    vectors, queries = data["gallery"], data["query"]
    labels = [f"p{label}" for label in data["gallery_labels"].tolist()]
    exact = new_faiss_index(args.dim, "Flat", "ip")
    exact.add_with_ids(vectors, np.arange(size, dtype=np.int64))
    truth = exact.search(queries, 10)[1]
    del exact
    work = Path(tempfile.mkdtemp(prefix="backends-", dir=args.output))
    folder = work / "gallery"
    started = time.perf_counter()
    if backend == "faiss":
        if index_type == "IVF":
            index_type = f"IVF{4096 if size >= 500_000 else 1024},Flat"
        gallery = GalleryIndex(args.dim, index_type=index_type)
        if not gallery.is_trained:
            gallery.train(vectors[np.random.default_rng(0).choice(size, min(size, 64 * 4096), replace=False)])
        ids = gallery.add(vectors, labels)
        if index_type.startswith("IVF"):
            gallery.nprobe = 16
        elif index_type.startswith("HNSW"):
            gallery.ef_search = 64
        gallery.save(folder)
    else:
        gallery = create_milvus_gallery(folder, dim=args.dim, index_type=index_type)
        ids = gallery.add(vectors, labels)  # Milvus's own ids: mapped back to rows for recall
        gallery.commit()
        record_milvus_gallery(folder, gallery)
    gallery.search(queries[:1], 10)  # searchable
    build = time.perf_counter() - started

    added = ids

    def timed(batch: int) -> List[float]:
        times, ids, done, start = [], [], 0, time.perf_counter()
        while done < len(queries) and (time.perf_counter() - start < args.seconds or not times):
            block = queries[done:done + batch]
            tick = time.perf_counter()
            ids.append(np.searchsorted(added, gallery.search(block, 10).ids))
            times.append(time.perf_counter() - tick)
            done += len(block)
        return times, np.concatenate(ids)

    one, found_one = timed(1)
    many, found_many = timed(64)
    found = found_many if len(found_many) >= len(found_one) else found_one
    recall = float(np.mean([len(set(row) & set(want)) / 10 for row, want in zip(found, truth)]))

    new = np.random.default_rng(1).standard_normal((5, args.dim)).astype(np.float32)
    tick = time.perf_counter()
    with update_gallery(folder) as changing:
        changing.add(new, ["new-product"] * 5)
    if backend == "faiss":
        gallery = changing
    visible = gallery.search(new[:1], 1).labels[0, 0] == "new-product"
    add_one = time.perf_counter() - tick
    return {"config": config, "size": size, "dim": args.dim, "build_s": round(build, 2),
            "add_one_product_s": round(add_one, 3), "visible_after_add": bool(visible),
            "qps_batch1": round(len(one) / sum(one), 1), "p99_ms_batch1": round(float(np.percentile(one, 99)) * 1e3, 1),
            "qps_batch64": round(64 * len(many) / sum(many), 1), "recall_at_10": round(recall, 4),
            "queries_batch1": len(one), "queries_batch64": 64 * len(many),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "disk_mb": round(folder_bytes(folder) / 2**20, 1)}


def table(rows: List[Dict[str, Any]]) -> str:
    head = ("| size | backend | build s | add one product s | q/s batch 1 | p99 ms batch 1 | q/s batch 64 | "
            "recall@10 | peak RSS GB | disk MB |\n|---|---|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {row['size']:,} | {row['config']} | {row['build_s']} | {row['add_one_product_s']} | {row['qps_batch1']} | "
        f"{row['p99_ms_batch1']} | {row['qps_batch64']} | {row['recall_at_10']} | {row['peak_rss_gb']} | "
        f"{row['disk_mb']} |\n" if "error" not in row else f"| {row['size']:,} | {row['config']} | failed: "
        f"{row['error'][:80]} |||||||| \n" for row in rows)


def main(argv=None) -> None:
    args = parse_args(argv)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(measure_one(args.one[0], int(args.one[1]), args)))
        return
    rows = []
    for size in args.sizes:
        for config in args.configs:
            command = [sys.executable, __file__, "--one", config, str(size), "--dim", str(args.dim), "--queries",
                       str(args.queries), "--seconds", str(args.seconds), "--output", args.output]
            done = subprocess.run(command, capture_output=True, text=True)
            row = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0
                   else {"config": config, "size": size, "error": done.stderr.strip().splitlines()[-1:]})
            if "error" in row:
                row["error"] = str(row["error"])
            rows.append(row)
            print(json.dumps(row), flush=True)
            (Path(args.output) / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (Path(args.output) / "results.md").write_text(table(rows))
    print(table(rows))
    for work in Path(args.output).glob("backends-*"):
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
