"""The ``prodrec serve`` command: the recognition service on a gallery folder (``docs/serving.md``)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable, Dict, Optional

from prodrec.cli.models import MODEL_FILE, load_detector_model, load_model
from prodrec.utils import ProdrecError

__all__ = ["add_commands", "read_token"]


def add_commands(commands: "argparse._SubParsersAction") -> Dict[str, Callable[[argparse.Namespace], int]]:
    """Add ``serve`` to a ``prodrec`` subparsers object; returns ``{command: handler}``."""
    serve = commands.add_parser("serve", help="serve recognition and gallery changes over HTTP, with a web page")
    serve.add_argument("--index", required=True, help="gallery folder (from prodrec index build)")
    serve.add_argument("--checkpoint", help=f"model or its export, e.g. model.onnx (default: the gallery's {MODEL_FILE})")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--token-file", help="file holding the write token (or set PRODREC_TOKEN); without one, "
                                            "writes are refused")
    serve.add_argument("--detector", metavar="DET.pt",
                       help="find the products in each photo first (prodrec detect train): one region per product")
    serve.add_argument("--read-only", action="store_true",
                       help="searches only; several read-only servers may share a gallery with the one that writes")
    serve.add_argument("--device", default="auto")
    serve.add_argument("--max-batch", type=int, default=32, help="images embedded together at most (default 32)")
    serve.add_argument("--batch-wait-ms", type=float, default=2.0,
                       help="how long a request waits for others to batch with (default 2 ms; 0: no batching wait)")
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload (default 20 MB)")
    return {"serve": _serve}


def read_token(token_file: Optional[str]) -> Optional[str]:
    """The write token from ``token_file`` (its first line) or else ``PRODREC_TOKEN``; None when neither."""
    if token_file:
        token = Path(token_file).read_text(encoding="utf-8").strip()
        if not token:
            raise ProdrecError(f"--token-file {token_file} is empty; write the token into it")
        return token
    return os.environ.get("PRODREC_TOKEN") or None


def _serve(args: argparse.Namespace) -> int:
    from prodrec.serving import BatchingEmbedder, GalleryService, create_app

    try:
        import uvicorn
    except ImportError as error:
        raise ImportError("prodrec serve needs the serving extra: pip install 'prodrec[serve]'") from error
    if args.max_upload_mb <= 0 or args.batch_wait_ms < 0 or not 0 < args.port < 65536:
        raise ProdrecError(f"--max-upload-mb must be > 0, --batch-wait-ms >= 0 and --port in 1..65535; got "
                           f"{args.max_upload_mb}, {args.batch_wait_ms} and {args.port}")
    token = read_token(args.token_file)
    model = load_model(args.checkpoint or os.path.join(args.index, MODEL_FILE), args.device)
    embedder = BatchingEmbedder(model, max_batch=args.max_batch, max_wait_ms=args.batch_wait_ms)
    detector = None
    if args.detector:
        detector = load_detector_model(args.detector, args.device)
    service = GalleryService(args.index, embedder, detector=detector, read_only=args.read_only)
    try:
        app = create_app(service, token=token, max_upload_bytes=int(args.max_upload_mb * (1 << 20)))
        print(f"prodrec serve: {len(service.gallery)} images of {len(service.products())} products from "
              f"{args.index}; writes {'off (--read-only)' if args.read_only else 'need the token' if token else 'are off (no token)'}; "
              f"http://{args.host}:{args.port}/", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        service.close()
    return 0
