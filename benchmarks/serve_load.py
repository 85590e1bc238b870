"""Load on ``prodrec serve``: requests/s and p50 / p99 latency of ``POST /recognize`` at several concurrencies,
for PyTorch and the ONNX export, with and without dynamic batching, beside the bare forward of the same model.

    python benchmarks/serve_load.py --output /tmp/serve_load                       # resnet50d at 224 and 64 px
    python benchmarks/serve_load.py --backbone test_resnet --image-sizes 32 --duration 2 --output /tmp/tiny

Each configuration starts ``prodrec serve`` in its own process on loopback (a random gallery recorded as
made by the model, so no weights are needed); the clients are ``httpx.AsyncClient``s in this process, each
sending one JPEG photo after another for ``--duration`` seconds. The bare figures time the model alone in
this process: images/s of batched forwards (batch = the largest concurrency) and the p50 of one-image
forwards. Ratios (goals in ``docs/benchmarks.md``): service images/s at the largest concurrency over the bare
batched images/s; batching's requests/s over no batching's there; p50 at one client over the bare one-image
forward.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50d", help="timm model (default: the recipe's ResNet50_vd)")
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[224, 64])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--backends", nargs="+", choices=["torch", "onnx"], default=["torch", "onnx"])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per concurrency")
    parser.add_argument("--gallery", type=int, default=1000, help="gallery images (random features)")
    parser.add_argument("--output", required=True, help="folder for results.json and results.md")
    return parser


def percentile(values: List[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def photo(size: int) -> bytes:
    """A JPEG photo a little larger than the model's input, as a phone would crop it."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (size + size // 7, size + size // 7, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def prepare(args: argparse.Namespace, size: int, folder: Path) -> Dict[str, Path]:
    """A gallery folder for a randomly initialised model of ``size`` px, and the model as PyTorch and ONNX."""
    import torch

    from prodrec.gallery import GalleryIndex
    from prodrec.models import Embedder, export_embedder

    torch.manual_seed(0)
    model = Embedder(args.backbone, embedding_size=512, image_size=size).eval()
    gallery = GalleryIndex(model.embedding_size)
    features = np.random.default_rng(1).standard_normal((args.gallery, model.embedding_size))
    gallery.add(features, [f"sku-{i % 100}" for i in range(args.gallery)])
    gallery.embedder_info = model.embedder_info
    gallery.save(folder / "gallery")
    files = {"torch": model.save(folder / "model.pt")}
    if "onnx" in args.backends:
        files["onnx"] = export_embedder(model, folder / "model.onnx", format="onnx")
    return files


def bare_forward(path: Path, backend: str, batch: int, seconds: float) -> Dict[str, float]:
    """Images/s of batched forwards and the p50 of one-image forwards of the model alone."""
    import torch

    from prodrec.models import Embedder, ExportedEmbedder

    model = ExportedEmbedder(path) if backend == "onnx" else Embedder.load(path).eval()
    size = model.image_size
    for count, key in ((batch, "batched"), (1, "single")):
        tensor = torch.randn(count, 3, size, size)
        model.embed_batch(tensor)  # warm-up
        times, started = [], time.perf_counter()
        while time.perf_counter() - started < seconds / 2 or len(times) < 3:
            begin = time.perf_counter()
            model.embed_batch(tensor)
            times.append(time.perf_counter() - begin)
        if key == "batched":
            batched = count * len(times) / sum(times)
        else:
            single = percentile(times, 50)
    return {"batched_images_per_second": batched, "single_p50_ms": single * 1000}


def start_server(folder: Path, checkpoint: Path, batching: bool, max_batch: int):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = ["--max-batch", str(max_batch), "--batch-wait-ms", "2"] if batching else ["--max-batch", "1",
                                                                                       "--batch-wait-ms", "0"]
    process = subprocess.Popen([sys.executable, "-m", "prodrec", "serve", "--index", str(folder / "gallery"),
                                "--checkpoint", str(checkpoint), "--port", str(port), *options],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return process, f"http://127.0.0.1:{port}"


async def wait_ready(url: str, process: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 300
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {process.stderr.read()[-3000:]}")
            try:
                if (await client.get(url + "/health")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise RuntimeError("the server did not start in 300 s")


async def load(url: str, image: bytes, clients: int, seconds: float) -> Dict[str, float]:
    """``clients`` clients, each posting ``image`` one request after another for ``seconds``."""
    import httpx

    latencies: List[float] = []
    errors = [0]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:
        await client.post("/recognize", files={"image": ("photo.jpg", image)})  # warm-up
        stop = time.perf_counter() + seconds

        async def one_client() -> None:
            while time.perf_counter() < stop:
                begin = time.perf_counter()
                reply = await client.post("/recognize", files={"image": ("photo.jpg", image)})
                if reply.status_code != 200:
                    errors[0] += 1
                latencies.append(time.perf_counter() - begin)

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {"requests_per_second": len(latencies) / elapsed, "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000, "requests": len(latencies), "errors": errors[0]}


def markdown(results: dict) -> str:
    lines = [f"{results['settings']['backbone']}, gallery {results['settings']['gallery']} images, "
             f"{results['settings']['duration']:.0f} s per row", "",
             "| px | backend | batching | clients | req/s | p50 ms | p99 ms | bare batched img/s | bare 1-image p50 ms |",
             "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in results["rows"]:
        bare = results["bare"][f"{row['size']}-{row['backend']}"]
        lines.append(f"| {row['size']} | {row['backend']} | {'on' if row['batching'] else 'off'} | {row['clients']} | "
                     f"{row['requests_per_second']:.1f} | {row['p50_ms']:.0f} | {row['p99_ms']:.0f} | "
                     f"{bare['batched_images_per_second']:.1f} | {bare['single_p50_ms']:.0f} |")
    lines += ["", "| px | backend | service / bare batched img/s (>= 0.8) | batching / none req/s (>= 1.5) | "
                  "p50 at 1 client / bare 1-image (<= 1.2) |", "| ---: | --- | ---: | ---: | ---: |"]
    for key, ratio in results["ratios"].items():
        size, backend = key.split("-")
        lines.append(f"| {size} | {backend} | {ratio['service_vs_bare']:.2f} | {ratio['batching_gain']:.2f} | "
                     f"{ratio['single_latency']:.2f} |")
    return "\n".join(lines + ["", f"Command: `{results['command']}`", ""])


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if min(args.image_sizes + args.concurrency + [args.gallery]) < 1 or args.duration <= 0:
        parser.error("--image-sizes, --concurrency and --gallery must be positive and --duration > 0")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    most = max(args.concurrency)
    results: dict = {"settings": vars(args), "rows": [], "bare": {}, "ratios": {},
                     "command": "python " + " ".join(["benchmarks/serve_load.py", *(argv or sys.argv[1:])])}
    for size in args.image_sizes:
        with tempfile.TemporaryDirectory(prefix="prodrec-serve-load-") as scratch:
            files = prepare(args, size, Path(scratch))
            image = photo(size)
            for backend in args.backends:
                bare = bare_forward(files[backend], backend, most, min(args.duration, 10))
                results["bare"][f"{size}-{backend}"] = bare
                found = {}
                for batching in (True, False):
                    process, url = start_server(Path(scratch), files[backend], batching, most)
                    try:
                        asyncio.run(wait_ready(url, process))
                        for clients in args.concurrency:
                            row = {"size": size, "backend": backend, "batching": batching, "clients": clients,
                                   **asyncio.run(load(url, image, clients, args.duration))}
                            results["rows"].append(row)
                            found[batching, clients] = row
                            print(json.dumps(row), flush=True)
                    finally:
                        process.terminate()
                        process.wait(timeout=60)
                results["ratios"][f"{size}-{backend}"] = {
                    "service_vs_bare": found[True, most]["requests_per_second"] / bare["batched_images_per_second"],
                    "batching_gain": found[True, most]["requests_per_second"] / found[False, most]["requests_per_second"],
                    "single_latency": found[True, min(args.concurrency)]["p50_ms"] / bare["single_p50_ms"]}
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (output / "results.md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
