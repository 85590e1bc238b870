"""Serving: the recognition service behind ``prodrec serve``: dynamic batching, the gallery it answers from and
changes while serving, and the HTTP API with its web page (FastAPI, the ``serve`` extra)."""
from prodrec.serving.batching import BatchingEmbedder
from prodrec.serving.service import SERVER_LOCK_FILE, UPLOADS_FOLDER, GalleryService, ProductNotFound, ReadOnly
from prodrec.serving.app import MAX_UPLOAD_BYTES, create_app

__all__ = ["BatchingEmbedder", "GalleryService", "ProductNotFound", "ReadOnly", "SERVER_LOCK_FILE", "UPLOADS_FOLDER",
           "MAX_UPLOAD_BYTES", "create_app"]
