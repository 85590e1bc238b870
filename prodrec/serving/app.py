"""The HTTP API and web page of ``prodrec serve`` (FastAPI; ``pip install "prodrec[serve]"``).

Routes (``docs/serving.md``): ``GET /health``, ``POST /recognize``, ``GET /products``, ``POST /products``,
``DELETE /products/{label}``, ``DELETE /images/{id}``, ``GET /images/{id}/thumbnail``, ``GET /metrics``,
``GET /`` (the page) and FastAPI's ``GET /docs``. Writes need ``Authorization: Bearer <token>``; bad input is
a 4xx with ``{"error": ...}``, never a 500.
"""

import hmac
import time
from importlib import resources
from typing import Any, List, Optional

from prodrec.serving.batching import BatchingEmbedder
from prodrec.serving.service import GalleryService, ProductNotFound, ReadOnly
from prodrec.utils import LockBusy, ProdrecError

__all__ = ["create_app", "MAX_UPLOAD_BYTES"]

MAX_UPLOAD_BYTES = 20 << 20
_THUMBNAIL_SIDE = 160


def _import_fastapi():
    try:
        import fastapi
        import prometheus_client
    except ImportError as error:
        raise ImportError(f"prodrec serve needs the serving extra ({error.name} is missing): "
                          "pip install 'prodrec[serve]'") from error
    return fastapi, prometheus_client


def create_app(service: GalleryService, *, token: Optional[str] = None, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> Any:
    """The FastAPI application answering from ``service``. ``token``: the write token (None: writes refused
    with 403). A :class:`~prodrec.serving.BatchingEmbedder` in the service reports its batch sizes to
    ``/metrics``.

    Example:
        >>> app = create_app(GalleryService("gallery", BatchingEmbedder(Embedder.load("m.pt"))))  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    fastapi, prometheus = _import_fastapi()
    from fastapi import File, Form, Query, Request, UploadFile
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    app = fastapi.FastAPI(title="prodrec", description="Product recognition by retrieval")
    registry = prometheus.CollectorRegistry()
    requests = prometheus.Counter("prodrec_requests", "HTTP requests", ["route", "status"], registry=registry)
    latency = prometheus.Histogram("prodrec_request_seconds", "Request latency", ["route"], registry=registry,
                                   buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
    images = prometheus.Gauge("prodrec_gallery_images", "Images in the gallery", registry=registry)
    products = prometheus.Gauge("prodrec_gallery_products", "Products in the gallery", registry=registry)
    batch_sizes = prometheus.Histogram("prodrec_batch_size", "Images per forward pass", registry=registry,
                                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))
    if isinstance(service.embedder, BatchingEmbedder):
        service.embedder.observe = batch_sizes.observe

    def error(status: int, message: str) -> Any:
        return JSONResponse({"error": message}, status_code=status)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_upload_bytes:
            response = error(413, f"the request is {int(length):,} bytes; uploads are limited to "
                                  f"{max_upload_bytes:,} (prodrec serve --max-upload-mb)")
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "other")
        requests.labels(path, str(response.status_code)).inc()
        latency.labels(path).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(ProdrecError)
    async def refused(request: Request, problem: ProdrecError):
        status = (404 if isinstance(problem, ProductNotFound) else 409 if isinstance(problem, LockBusy)
                  else 403 if isinstance(problem, ReadOnly) else 400)
        return error(status, str(problem))

    def authorize(request: Request) -> Optional[Any]:
        if token is None:
            return error(403, "writes are off: start prodrec serve with --token-file FILE or the environment "
                              "variable PRODREC_TOKEN set, then send Authorization: Bearer <token>")
        given = request.headers.get("authorization", "")
        if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())):
            return error(401, "wrong or missing token: send Authorization: Bearer <token>")
        return None

    async def read_upload(upload: UploadFile) -> bytes:
        data = await upload.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise ProdrecError(f"{upload.filename} is over the {max_upload_bytes:,}-byte upload limit")
        return data

    @app.get("/health")
    def health() -> Any:
        gallery, count = service.gallery, len(service.products())
        images.set(len(gallery))
        products.set(count)
        return {"status": "ok", "images": len(gallery), "products": count,
                "generation": service.backend.generation(), "backend": gallery.backend, "index_type": gallery.index_type,
                "threshold": service.default_threshold, "calibrated": gallery.calibration is not None,
                "embedder": gallery.embedder_info}

    @app.post("/recognize")
    async def recognize(image: UploadFile = File(...), k: int = Query(5, ge=1, le=100),
                        threshold: Optional[float] = Query(None), filter: Optional[str] = Query(None)) -> Any:
        data = await read_upload(image)
        from starlette.concurrency import run_in_threadpool

        regions = await run_in_threadpool(service.recognize, data, k=k, threshold=threshold, filter=filter)
        return {"image": image.filename, "regions": [region.to_json() for region in regions]}

    @app.get("/products")
    def list_products(offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000)) -> Any:
        every = service.products()
        return {"total": len(every), "offset": offset, "products": every[offset:offset + limit]}

    @app.post("/products", status_code=201)
    async def add_product(request: Request, label: str = Form(...), name: Optional[str] = Form(None),
                          images: List[UploadFile] = File(...)) -> Any:
        refusal = authorize(request)
        if refusal is not None:
            return refusal
        uploads = [(upload.filename or "image", await read_upload(upload)) for upload in images]
        from starlette.concurrency import run_in_threadpool

        ids = await run_in_threadpool(service.add_product, label, uploads, name=name or None)
        return {"label": label, "ids": ids}

    @app.delete("/products/{label}")
    def remove_product(request: Request, label: str) -> Any:
        return authorize(request) or {"removed": service.remove_product(label)}

    @app.delete("/images/{image_id}")
    def remove_image(request: Request, image_id: int) -> Any:
        refusal = authorize(request)
        if refusal is not None:
            return refusal
        service.remove_image(image_id)
        return {"removed": 1}

    @app.get("/images/{image_id}/thumbnail")
    def thumbnail(image_id: int) -> Any:
        import cv2

        from prodrec.data import ImageReadError, load_image

        path = service.image_path(image_id)
        if path is None:
            return error(404, f"image {image_id} has no recorded file to show")
        try:
            pixels = load_image(path, min_size=_THUMBNAIL_SIDE)
        except ImageReadError as problem:
            return error(404, str(problem))
        scale = _THUMBNAIL_SIDE / max(pixels.shape[:2])
        if scale < 1:
            pixels = cv2.resize(pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        encoded = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))[1].tobytes()
        return Response(encoded, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/metrics")
    def metrics() -> Any:
        images.set(len(service.gallery))
        products.set(len(service.products()))
        return Response(prometheus.generate_latest(registry), media_type=prometheus.CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    def page() -> Any:
        return resources.files("prodrec.serving").joinpath("static/index.html").read_text(encoding="utf-8")

    return app
