"""Million-vector evaluation: time and peak memory of exact and approximate search on synthetic embeddings.

    OMP_NUM_THREADS=2 python benchmarks/eval_scale.py --output /tmp/eval_scale      # 1M x 512, 10k queries
    python benchmarks/eval_scale.py --gallery 20000 --queries 500 --output /tmp/small

The vectors are written once to ``.npy`` files (float32 by default) and every case runs in a fresh process
that memory-maps them, so its peak resident memory (``VmHWM`` from ``/proc/self/status``, which counts faiss's
and BLAS's allocations and the mapped feature pages) belongs to that case alone. Cases:

* ``exact``: ``evaluate_embeddings`` (Recall@K and full-ranking mAP by counting, query blocks of 256 MiB of
  scores against the whole gallery);
* ``exact_recall``: the same without mAP (one counting pass per query);
* ``knn_faiss``: ``knn_search`` top 100 (``faiss.knn`` per gallery block of 262,144 rows, merged in a
  ``faiss.ResultHeap``), then Recall@K from the lists;
* ``knn_torch``: the same top 100 with torch matmul + topk per (2,048 queries x 16,384 gallery) tile and a
  running top-k merge, the alternative to faiss for the block kernel;
* ``ivf``: ``evaluate_embeddings(searcher=FaissSearch("IVF{lists},Flat", nprobe=...))``: train on a sample, add,
  search.

The table ends with the exact evaluation's time over the faiss top-k search's (``knn_faiss``) and its peak
memory above the process's start over the features' size. ``--repeat N`` runs each case N times in its
process and keeps the fastest (peak memory is the process's, over all runs).

Each item of ``--classes`` classes has a random centre; a vector is its item's centre plus Gaussian noise
(``--noise`` per dimension), L2-normalised, so Recall@K and mAP are neither 0 nor 1.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

CASES = ("exact", "exact_recall", "knn_faiss", "knn_torch", "ivf")
CHUNK = 65536  # rows generated at a time
KS = (1, 5, 10, 20)
TOP_K = 100


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", type=int, default=1_000_000, help="gallery vectors G")
    parser.add_argument("--queries", type=int, default=10_000, help="query vectors Q")
    parser.add_argument("--dim", type=int, default=512, help="dimension D")
    parser.add_argument("--classes", type=int, help="items (default G / 10: 10 gallery vectors per item)")
    parser.add_argument("--noise", type=float, default=2.0, help="per-dimension noise around an item's centre")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="stored feature type")
    parser.add_argument("--ivf-lists", type=int, default=1024, help="IVF inverted lists")
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists visited per query")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case; the fastest counts")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--workdir", help="where the feature files go (default: a temporary folder)")
    parser.add_argument("--output", required=True, help="folder for results.json and results.md")
    parser.add_argument("--run-case", help=argparse.SUPPRESS)  # internal: run one case in this process
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    args.classes = args.classes or max(1, args.gallery // 10)
    args.cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    problems = [f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}"
                for name, low in (("gallery", TOP_K), ("queries", 1), ("dim", 1), ("classes", 1), ("ivf_lists", 1),
                                  ("nprobe", 1), ("repeat", 1)) if getattr(args, name) < low]
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        problems.append(f"unknown cases {unknown}; choose among {', '.join(CASES)}")
    if args.ivf_lists * 39 > args.gallery and "ivf" in args.cases:
        problems.append(f"--ivf-lists {args.ivf_lists} needs a gallery of at least {args.ivf_lists * 39} vectors "
                        "to train (faiss's 39 per list)")
    if problems:
        parser.error("; ".join(problems))


def write_vectors(path: Path, labels: np.ndarray, centres: np.ndarray, noise: float, dtype: str,
                  rng: np.random.Generator) -> None:
    from prodrec.models import FeatureWriter

    with FeatureWriter(path, len(labels), centres.shape[1], dtype=dtype) as writer:
        for start in range(0, len(labels), CHUNK):
            rows = centres[labels[start:start + CHUNK]] + noise * rng.standard_normal(
                (len(labels[start:start + CHUNK]), centres.shape[1]), dtype=np.float32)
            writer.write(rows / np.linalg.norm(rows, axis=1, keepdims=True))


def make_data(args: argparse.Namespace, workdir: Path) -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.classes, args.dim), dtype=np.float32)
    gallery_labels = rng.integers(0, args.classes, args.gallery)
    query_labels = rng.integers(0, args.classes, args.queries)
    np.savez(workdir / "labels.npz", query=query_labels, gallery=gallery_labels)
    write_vectors(workdir / "gallery.npy", gallery_labels, centres, args.noise, args.dtype, rng)
    write_vectors(workdir / "query.npy", query_labels, centres, args.noise, args.dtype, rng)


def memory_mib() -> Dict[str, float]:
    """Resident (VmRSS) and peak resident (VmHWM) memory of this process, MiB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: int(status[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def torch_top_k(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    import torch

    best_scores = torch.full((len(queries), k), -torch.inf)
    best = torch.zeros((len(queries), k), dtype=torch.int64)
    for q_start in range(0, len(queries), 2048):
        query = torch.from_numpy(np.ascontiguousarray(queries[q_start:q_start + 2048], dtype=np.float32))
        rows = slice(q_start, q_start + len(query))
        for g_start in range(0, len(gallery), 16384):
            block = torch.from_numpy(np.ascontiguousarray(gallery[g_start:g_start + 16384], dtype=np.float32))
            scores, found = torch.topk(query @ block.T, min(k, len(block)))
            merged_scores, pick = torch.topk(torch.cat([best_scores[rows], scores], 1), k)
            best[rows] = torch.gather(torch.cat([best[rows], found + g_start], 1), 1, pick)
            best_scores[rows] = merged_scores
    return best.numpy()


def run_case(case: str, args: argparse.Namespace, workdir: Path) -> Dict[str, object]:
    from prodrec.models import open_features
    from prodrec.retrieval import FaissSearch, evaluate_embeddings, knn_search, retrieval_metrics

    queries, gallery = open_features(workdir / "query.npy"), open_features(workdir / "gallery.npy")
    labels = np.load(workdir / "labels.npz")
    query_labels, gallery_labels = labels["query"], labels["gallery"]
    before = memory_mib()
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        if case in ("exact", "exact_recall"):
            metrics = evaluate_embeddings(queries, query_labels, gallery, gallery_labels, ks=KS,
                                          compute_map=case == "exact")
        elif case == "ivf":
            metrics = evaluate_embeddings(queries, query_labels, gallery, gallery_labels, ks=KS, searcher=FaissSearch(
                f"IVF{args.ivf_lists},Flat", nprobe=args.nprobe, top_k=TOP_K))
        else:
            found = (knn_search(queries, gallery, TOP_K)[1] if case == "knn_faiss"
                     else torch_top_k(queries, gallery, TOP_K))
            metrics = retrieval_metrics(found, query_labels, gallery_labels, ks=KS, compute_map=False)
        times.append(time.perf_counter() - started)
    after = memory_mib()
    return {"case": case, "seconds": min(times), "rss_before_mib": before["VmRSS"], "peak_rss_mib": after["VmHWM"],
            "metrics": metrics}


def markdown(results: dict) -> str:
    settings = results["settings"]
    lines = [f"Queries {settings['queries']:,} x gallery {settings['gallery']:,} x {settings['dim']} "
             f"({settings['dtype']}), {settings['classes']:,} items, {settings['threads']} threads; features "
             f"{results['feature_mib']:.0f} MiB on disk", "",
             "| case | time s | peak RSS MiB | RSS before MiB | R@1 | R@10 | mAP |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run in results["runs"]:
        metrics = run["metrics"]
        average = next((f"{100 * value:.2f}" for key, value in metrics.items() if key.startswith("mAP")), "-")
        lines.append(f"| {run['case']} | {run['seconds']:.1f} | {run['peak_rss_mib']:.0f} | "
                     f"{run['rss_before_mib']:.0f} | {100 * metrics['recall@1']:.2f} | "
                     f"{100 * metrics['recall@10']:.2f} | {average} |")
    runs = {run["case"]: run for run in results["runs"]}
    if "exact" in runs and "knn_faiss" in runs:
        exact = runs["exact"]
        lines += ["", f"Exact Recall@K + mAP over the faiss top-{TOP_K} search: "
                      f"{exact['seconds'] / runs['knn_faiss']['seconds']:.2f}x the time; peak memory above the "
                      f"start {(exact['peak_rss_mib'] - exact['rss_before_mib']) / results['feature_mib']:.2f}x "
                      "the features"]
    lines += ["", f"Command: `{results['command']}`", ""]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    if args.run_case:
        print(json.dumps(run_case(args.run_case, args, Path(args.workdir))))
        return 0
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prodrec-eval-scale-", dir=args.workdir) as workdir:
        started = time.perf_counter()
        make_data(args, Path(workdir))
        print(f"wrote {args.queries:,} + {args.gallery:,} vectors of {args.dim} in "
              f"{time.perf_counter() - started:.0f} s")
        runs = []
        for case in args.cases:
            command = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--run-case",
                       case, "--workdir", workdir]
            completed = subprocess.run(command, capture_output=True, text=True)
            if completed.returncode:
                raise RuntimeError(f"case {case} failed:\n{completed.stderr[-4000:]}")
            runs.append(json.loads(completed.stdout.strip().splitlines()[-1]))
            print(f"{case}: {runs[-1]['seconds']:.1f} s, peak RSS {runs[-1]['peak_rss_mib']:.0f} MiB")
        feature_mib = sum((Path(workdir) / name).stat().st_size for name in ("query.npy", "gallery.npy")) / 2**20
    arguments = argv if argv is not None else sys.argv[1:]
    results = {"command": "python " + " ".join(["benchmarks/eval_scale.py", *arguments]),
               "settings": {**{key: value for key, value in vars(args).items() if key not in ("run_case", "output")},
                            "threads": os.environ.get("OMP_NUM_THREADS", "all")},
               "feature_mib": feature_mib, "runs": runs}
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (output / "results.md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
