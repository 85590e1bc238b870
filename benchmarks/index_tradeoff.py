"""Accuracy vs speed vs memory of prodrec's gallery index types, and what re-ranking gains.

For each index type (``Flat``, ``HNSW32``, ``IVF{n},Flat``, ``IVF{n},PQ{m}``, with ``efSearch`` / ``nprobe``
sweeps) built as a :class:`prodrec.GalleryIndex` it reports Recall@1 relative to exact search (the share of
queries whose top-1 is the exact top-1), label Recall@1 (the top-1 has the query's label), queries/s of
``GalleryIndex.search`` (k 10, every query at once), bytes per vector of the saved ``index.faiss`` and the
train and add times, on two sets:

* ``real``: the synthetic products (``prodrec.make_synthetic_inshop``) embedded by a model trained here
  (resnet18d with an FC head, CE + TripletLossV2, 64 px, 3 epochs, AdamW as ``prodrec demo``; the FC head
  learns fastest from scratch, see docs/benchmarks.md) or by ``--checkpoint``; also the re-ranking gain:
  Recall@K and mAP@top_k with no re-ranking, query expansion and k-reciprocal re-ranking
  (:func:`prodrec.retrieval.rerank.rerank`) of the ``--top-k`` best candidates.
* ``vectors``: ``--vectors`` (1M) unit vectors of ``--dim`` (512) around ``vectors / 100`` random centres
  (seeded; Gaussian noise of norm ``--spread`` per vector), and ``--queries`` more drawn the same way.

``nlist`` is the power of two nearest ``sqrt(N)``, at most ``N / 39`` (faiss wants 39 training points per
centroid), IVF trains on at most ``64 * nlist`` vectors, ``m`` is ``dim / 8`` and ``dim / 16`` (8-bit codes;
PQ needs 256 training vectors). Writes ``results.json``, ``results.md`` and ``recall_vs_qps.png`` to ``--output``.

    OMP_NUM_THREADS=2 python benchmarks/index_tradeoff.py
    python benchmarks/index_tradeoff.py --checkpoint runs/a/checkpoints/best.pt --vectors 100000
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from prodrec.gallery import GalleryFolder, GalleryIndex
from prodrec.retrieval import retrieval_metrics
from prodrec.retrieval import rerank
from prodrec.retrieval import knn_search, l2_normalize

EF_SEARCH = (16, 32, 64, 128, 256)
NPROBE = (1, 2, 4, 8, 16, 32, 64)
K = 10
PQ_MIN_TRAIN = 256  # one training vector per code of an 8-bit sub-quantizer
# (row label, method, options): the defaults, and settings sized for 3 gallery images per product.
RERANKINGS = [("none", None, {}), ("qe", "qe", {}), ("qe, qe_k=2", "qe", {"qe_k": 2}),
              ("k-reciprocal", "k-reciprocal", {}), ("k-reciprocal, k1=6, k2=2", "k-reciprocal", {"k1": 6, "k2": 2})]
# A set where neighbourhoods are mostly right: 100 classes of 20 gallery vectors, 64-d (Recall@1 about 97%).
RERANK_CHECK = {"count": 2000, "queries": 500, "dim": 64, "spread": 1.2, "centres": 100}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="index-tradeoff", help="folder for results and the synthetic set")
    parser.add_argument("--sets", nargs="+", choices=["real", "vectors"], default=["real", "vectors"])
    parser.add_argument("--checkpoint", help="embed with this model (best.pt or a saved Embedder) instead of training")
    parser.add_argument("--items", type=int, default=1000, help="synthetic products (half train, half query/gallery)")
    parser.add_argument("--views", type=int, default=6, help="images per synthetic product")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--backbone", default="resnet18d")
    parser.add_argument("--head", choices=["fc", "arcmargin"], default="fc",
                        help="training head (with CE + TripletLossV2); fc learns fastest from scratch")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch (2 images per product)")
    parser.add_argument("--top-k", type=int, default=100, help="candidates re-ranked per query")
    parser.add_argument("--vectors", type=int, default=1_000_000, help="size of the vector set")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000, help="queries of the vector set")
    parser.add_argument("--spread", type=float, default=1.0, help="noise norm around the centres (unit vectors)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="repeat each timed search this long")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def index_plan(count: int, dim: int) -> List[Tuple[str, Optional[str], Tuple[int, ...]]]:
    """(index type, search knob, knob values) for a gallery of ``count`` vectors of ``dim``."""
    nlist = min(2 ** round(math.log2(math.sqrt(count))), 2 ** int(math.log2(max(1.0, count / 39))))
    plan = [("Flat", None, (0,)), ("HNSW32", "ef_search", EF_SEARCH),
            (f"IVF{nlist},Flat", "nprobe", tuple(p for p in NPROBE if p <= nlist))]
    for m in sorted({m for m in (dim // 8, dim // 16) if m >= 1 and dim % m == 0}, reverse=True):
        plan.append((f"IVF{nlist},PQ{m}", "nprobe", tuple(p for p in NPROBE if p <= nlist)))
    return plan


def clustered_vectors(count: int, queries: int, dim: int, spread: float, seed: int,
                      centres: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Unit vectors around ``centres`` (default ``count // 100``) random unit centres; label = centre."""
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.standard_normal((centres or max(1, count // 100), dim), dtype=np.float32))

    def draw(n: int) -> Tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, len(centres), n)
        out = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, 65536):
            part = labels[start:start + 65536]
            noise = rng.standard_normal((len(part), dim), dtype=np.float32) * np.float32(spread / math.sqrt(dim))
            out[start:start + len(part)] = l2_normalize(centres[part] + noise)
        return out, labels

    gallery, gallery_labels = draw(count)
    query, query_labels = draw(queries)
    return {"gallery": gallery, "gallery_labels": gallery_labels, "query": query, "query_labels": query_labels}


def real_embeddings(args: argparse.Namespace, output: Path) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Query and gallery embeddings of the synthetic products, by ``--checkpoint`` or a model trained here."""
    from prodrec.cli import build_parser, train_overrides
    from prodrec.config import load_config
    from prodrec.data import make_synthetic_inshop, read_splits
    from prodrec.retrieval import extract_embeddings
    from prodrec.models import Embedder
    from prodrec.train import train_metric

    info = make_synthetic_inshop(output / "data", items=args.items, views=args.views,
                                 image_size=max(96, args.image_size), seed=args.seed, progress=False)
    splits = read_splits("inshop", info.root)
    started = time.perf_counter()
    if args.checkpoint:
        model, source = Embedder.load(args.checkpoint), f"--checkpoint {args.checkpoint}"
    else:
        flags = build_parser().parse_args([
            "train", "--data-root", str(info.root), "--output", str(output / "run"), "--epochs", str(args.epochs),
            "--image-size", str(args.image_size), "--backbone", args.backbone, "--batch-size", str(args.batch_size),
            "--seed", str(args.seed), "--loss", "ce+triplet", "--head", args.head, "--set", "Optimizer.name=AdamW",
            "--set", "Optimizer.lr.name=Cosine", "--set", "Optimizer.lr.learning_rate=0.002"])
        result = train_metric(load_config("inshop_ce_triplet", overrides=train_overrides(flags)), data=splits,
                              progress=False)
        model = result.model
        source = (f"{args.backbone} + {args.head} head, CE + TripletLossV2, {args.image_size} px, trained here for "
                  f"{args.epochs} epoch(s) (Recall@1 {100 * result.metrics['recall@1']:.1f})")
    train_seconds = time.perf_counter() - started
    features = {name: extract_embeddings(model, getattr(splits, name), progress=False) for name in ("query", "gallery")}
    data = {"query": features["query"], "gallery": features["gallery"],
            "query_labels": np.asarray(splits.query.labels), "gallery_labels": np.asarray(splits.gallery.labels)}
    return data, {"model": source, "model_seconds": round(train_seconds, 1), "items": args.items,
                  "views": args.views, "num_query": len(splits.query), "num_gallery": len(splits.gallery)}


def timed_search(gallery: GalleryIndex, queries: np.ndarray, min_seconds: float) -> Tuple[Any, float]:
    """The search result and queries/s, repeating the search of every query until ``min_seconds`` passed."""
    gallery.search(queries[:8], K)  # warm-up
    runs, started = 0, time.perf_counter()
    while True:
        result = gallery.search(queries, K)
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return result, runs * len(queries) / elapsed


def measure_indexes(name: str, data: Dict[str, np.ndarray], args: argparse.Namespace, scratch: Path) -> List[Dict]:
    gallery_vectors, queries = data["gallery"], data["query"]
    count, dim = gallery_vectors.shape
    labels = data["gallery_labels"].astype(str).astype(object)
    exact_top1, rows = None, []
    rng = np.random.default_rng(args.seed)
    for index_type, knob, values in index_plan(count, dim):
        record = {"set": name, "index_type": index_type, "count": count, "dim": dim}
        if "PQ" in index_type and count < PQ_MIN_TRAIN:
            print(f"[{name}] {index_type}: skipped, PQ needs {PQ_MIN_TRAIN} training vectors ({count} here)")
            rows.append({**record, "skipped": f"PQ needs {PQ_MIN_TRAIN} training vectors"})
            continue
        gallery = GalleryIndex(dim, index_type=index_type, keep_features=False)
        started = time.perf_counter()
        if not gallery.is_trained:
            nlist = int(index_type[3:].split(",")[0])
            sample = gallery_vectors[np.sort(rng.choice(count, min(count, 64 * nlist), replace=False))]
            gallery.train(sample)
        trained = time.perf_counter()
        gallery.add(gallery_vectors, labels)
        added = time.perf_counter()
        folder = gallery.save(scratch / "index")
        size = (GalleryFolder(folder).current_folder() / "index.faiss").stat().st_size
        shutil.rmtree(folder)
        for value in values:
            if knob:
                setattr(gallery, knob, value)
            result, qps = timed_search(gallery, queries, args.min_seconds)
            top1 = result.ids[:, 0]
            if exact_top1 is None:
                exact_top1 = top1
            row = {**record, "knob": knob, "value": value if knob else None,
                   "recall_at_1_vs_exact": float(np.mean(top1 == exact_top1)),
                   "queries_per_second": round(qps, 1), "bytes_per_vector": round(size / count, 1),
                   "train_seconds": round(trained - started, 2), "add_seconds": round(added - trained, 2)}
            row["label_recall_at_1"] = retrieval_metrics(result.ids[:, :1], data["query_labels"], data["gallery_labels"],
                                                         ks=(1,), compute_map=False, missing_ok=True)["recall@1"]
            rows.append(row)
            print(f"[{name}] {index_type} {knob or ''}{'=' + str(value) if knob else ''}: "
                  f"R@1 vs exact {row['recall_at_1_vs_exact']:.3f}, {qps:.0f} q/s, {row['bytes_per_vector']} B/vector")
        del gallery
    return rows


def measure_reranking(name: str, data: Dict[str, np.ndarray], top_k: int) -> List[Dict[str, Any]]:
    top_k = min(top_k, len(data["gallery"]))
    ks = [k for k in (1, 5, 10) if k <= top_k]
    rows = []
    for label, method, options in RERANKINGS:
        started = time.perf_counter()
        if method is None:
            _, ranked = knn_search(data["query"], data["gallery"], top_k)
        else:
            _, ranked = rerank(data["query"], data["gallery"], method=method, top_k=top_k, **options)
        seconds = time.perf_counter() - started
        metrics = retrieval_metrics(ranked, data["query_labels"], data["gallery_labels"], ks=ks)
        map_key = next(key for key in metrics if key.startswith("mAP"))
        rows.append({"set": name, "method": label, "top_k": top_k, "mAP_key": map_key, "mAP": metrics[map_key],
                     **{f"recall@{k}": metrics[f"recall@{k}"] for k in ks}, "seconds": round(seconds, 2)})
        print(f"[{name}] re-ranking {label}: R@1 {metrics['recall@1']:.4f}, {map_key} {metrics[map_key]:.4f}, "
              f"{seconds:.1f} s")
    return rows


def write_markdown(path: Path, results: Dict[str, Any]) -> None:
    lines = []
    for name, settings in results["settings"]["sets"].items():
        rows = [r for r in results["indexes"] if r["set"] == name]
        lines += [f"**{name}**: {settings['description']}", "",
                  "| index type | knob | Recall@1 vs exact | label Recall@1 | queries/s | bytes/vector | train s | "
                  "add s |", "| --- | --- |" + " ---: |" * 6]
        for r in rows:
            if "skipped" in r:
                lines.append(f"| {r['index_type']} | skipped: {r['skipped']} |" + " |" * 6)
                continue
            knob = f"{r['knob']}={r['value']}" if r["knob"] else "exact"
            lines.append(f"| {r['index_type']} | {knob} | {100 * r['recall_at_1_vs_exact']:.1f} | "
                         f"{100 * r['label_recall_at_1']:.1f} | {r['queries_per_second']:,.0f} | "
                         f"{r['bytes_per_vector']:.1f} | {r['train_seconds']:.2f} | {r['add_seconds']:.2f} |")
        lines.append("")
    for name in dict.fromkeys(r["set"] for r in results["reranking"]):
        rows = [r for r in results["reranking"] if r["set"] == name]
        recalls = [key for key in rows[0] if key.startswith("recall@")]
        lines += [f"**Re-ranking, {name}**: {results['settings']['reranking'][name]}; exact search, the "
                  f"{rows[0]['top_k']} best candidates re-ranked", "",
                  "| re-ranking | " + " | ".join(f"Recall@{key[7:]}" for key in recalls) +
                  f" | {rows[0]['mAP_key']} | seconds |", "| --- |" + " ---: |" * (len(recalls) + 2)]
        lines += [f"| {r['method']} | " + " | ".join(f"{100 * r[key]:.2f}" for key in recalls) +
                  f" | {100 * r['mAP']:.2f} | {r['seconds']:.1f} |" for r in rows]
        lines.append("")
    lines += ["Recall and mAP in %. Recall@1 vs exact: the top-1 is exact search's top-1; label Recall@1: the top-1 "
              "has the query's label (real: the product; vectors: the centre). queries/s: `GalleryIndex.search` of "
              f"all queries at once, k {K}; faiss threads: {results['settings']['threads']}; "
              f"{results['settings']['machine']}.", "",
              f"Command: `{results['command']}`", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("the plot needs matplotlib: pip install matplotlib (or pip install -e '.[dev]')") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_plot(path: Path, results: Dict[str, Any]) -> None:
    plt = pyplot()
    names = list(results["settings"]["sets"])
    figure, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 4.8), squeeze=False)
    for axis, name in zip(axes[0], names):
        rows = [r for r in results["indexes"] if r["set"] == name and "skipped" not in r]
        for index_type in dict.fromkeys(r["index_type"] for r in rows):
            points = [r for r in rows if r["index_type"] == index_type]
            axis.plot([r["queries_per_second"] for r in points], [100 * r["recall_at_1_vs_exact"] for r in points],
                      marker="o", label=index_type)
            for r in points:
                if r["knob"]:
                    axis.annotate(str(r["value"]), (r["queries_per_second"], 100 * r["recall_at_1_vs_exact"]),
                                  fontsize=7, xytext=(3, 3), textcoords="offset points")
        count = rows[0]["count"] if rows else 0
        axis.set(xscale="log", xlabel="queries/s (log)", ylabel="Recall@1 vs exact search (%)",
                 title=f"{name}: {count:,} x {rows[0]['dim'] if rows else 0} (labels: nprobe / efSearch)")
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_results(output: Path, results: Dict[str, Any]) -> None:
    (output / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    write_markdown(output / "results.md", results)
    write_plot(output / "recall_vs_qps.png", results)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    for name in ("items", "views", "epochs", "batch_size", "top_k", "vectors", "dim", "queries"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.checkpoint and not os.path.isfile(args.checkpoint):
        parser.error(f"--checkpoint {args.checkpoint} not found")
    pyplot()  # fail now, not after the measurements, when matplotlib is missing
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    import faiss

    results: Dict[str, Any] = {
        "command": shlex.join(["python", os.path.relpath(__file__), *argv]),
        "settings": {"threads": faiss.omp_get_max_threads(), "machine": f"{os.cpu_count()} CPUs, faiss "
                     f"{faiss.__version__}", "k": K, "sets": {}, "reranking": {}},
        "indexes": [], "reranking": []}
    with tempfile.TemporaryDirectory(dir=output) as scratch:
        if "real" in args.sets:
            data, info = real_embeddings(args, output)
            results["settings"]["sets"]["real"] = {**info, "description": (
                f"synthetic products ({args.items} items x {args.views} views), {info['num_query']} queries vs "
                f"{info['num_gallery']} gallery images, {data['gallery'].shape[1]}-d embeddings of {info['model']}")}
            results["indexes"] += measure_indexes("real", data, args, Path(scratch))
            results["reranking"] += measure_reranking("real", data, args.top_k)
            results["settings"]["reranking"]["real"] = "the real set"
            check = {**RERANK_CHECK, "seed": args.seed}
            results["reranking"] += measure_reranking("clustered", clustered_vectors(**check), args.top_k)
            results["settings"]["reranking"]["clustered"] = (
                f"{check['count']} gallery vectors in {check['centres']} clusters, {check['queries']} queries, "
                f"{check['dim']}-d, noise norm {check['spread']}")
            write_results(output, results)
        if "vectors" in args.sets:
            started = time.perf_counter()
            data = clustered_vectors(args.vectors, args.queries, args.dim, args.spread, args.seed)
            results["settings"]["sets"]["vectors"] = {
                "count": args.vectors, "dim": args.dim, "queries": args.queries, "spread": args.spread,
                "description": f"{args.vectors:,} clustered random unit vectors of {args.dim} dimensions "
                               f"({max(1, args.vectors // 100):,} centres, noise norm {args.spread}), "
                               f"{args.queries} queries; made in {time.perf_counter() - started:.0f} s"}
            results["indexes"] += measure_indexes("vectors", data, args, Path(scratch))
            write_results(output, results)
    print((output / "results.md").read_text(encoding="utf-8"))
    print(f"wrote {output / 'results.json'}, results.md, recall_vs_qps.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
