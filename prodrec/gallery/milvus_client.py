"""Connections to Milvus (one client per URI and process), the index types prodrec builds on it, and Milvus's
failures as messages that name the fix.

``pymilvus`` is imported here, lazily: it is the optional ``milvus`` extra (with ``milvus-lite`` for local
``.db`` galleries).
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar

from prodrec.utils import ProdrecError

__all__ = ["milvus_client", "milvus_call", "milvus_token", "is_local_uri", "TOKEN_ENV", "TOKEN_FILE_ENV",
           "MILVUS_INDEX_TYPES", "MILVUS_LITE_UNBUILDABLE", "check_milvus_index_type", "is_milvus_lite",
           "check_collection_name"]

TOKEN_ENV, TOKEN_FILE_ENV = "PRODREC_MILVUS_TOKEN", "PRODREC_MILVUS_TOKEN_FILE"
MILVUS_INDEX_TYPES = {"FLAT": {}, "HNSW": {"M": 32, "efConstruction": 100}, "HNSW_SQ": {"M": 32, "efConstruction": 100},
                      "IVF_FLAT": {"nlist": 1024}, "IVF_SQ8": {"nlist": 1024}, "AUTOINDEX": {}}
"""Index types prodrec builds on Milvus, with their build parameters."""
MILVUS_LITE_UNBUILDABLE = ("IVF_PQ", "HNSW_PQ", "HNSW_PRQ", "DISKANN", "SCANN", "IVF_RABITQ", "GPU_CAGRA")
"""Types Milvus Lite accepts and then fails to build in the background."""
_CLIENTS: Dict[Tuple[str, str], Any] = {}
_LOCK = threading.Lock()
_T = TypeVar("_T")


def is_local_uri(uri: str) -> bool:
    """Whether ``uri`` is a Milvus Lite data folder (a path ending in ``.db``) rather than a server address;
    anything else raises ProdrecError."""
    if uri.startswith(("http://", "https://", "tcp://", "grpc://")):
        return False
    if not uri.endswith(".db"):
        raise ProdrecError(f"a Milvus URI is a Milvus Lite folder ending in .db (./gallery.db) or a server address "
                           f"(http://HOST:19530); got {uri!r}")
    return True


def milvus_token() -> str:
    """The server credentials: ``$PRODREC_MILVUS_TOKEN``, else the file ``$PRODREC_MILVUS_TOKEN_FILE`` names,
    else none (``""``). Never stored with the gallery."""
    token, path = os.environ.get(TOKEN_ENV), os.environ.get(TOKEN_FILE_ENV)
    if token:
        return token
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ProdrecError(f"cannot read the Milvus token file {path} (${TOKEN_FILE_ENV}): {error.strerror}") from None
    return ""


def milvus_client(uri: str) -> Any:
    """The process's ``pymilvus.MilvusClient`` for ``uri`` (made on first use; Milvus Lite starts in this
    process for a ``.db`` folder)."""
    try:
        from pymilvus import MilvusClient
    except ImportError as error:
        raise ImportError(f"a Milvus gallery needs the milvus extra ({error.name} is missing): "
                          "pip install 'prodrec[milvus]'") from error
    logging.getLogger("pymilvus.decorators").setLevel(logging.CRITICAL)  # its failures reach the user as ours
    logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)  # Milvus Lite has no mvccTs
    token = milvus_token()
    local = is_local_uri(uri)
    key = (os.path.abspath(uri) if local else uri, token)
    with _LOCK:
        if key not in _CLIENTS:
            if local:
                Path(uri).parent.mkdir(parents=True, exist_ok=True)
            try:
                _CLIENTS[key] = MilvusClient(uri=key[0], token=token, timeout=10)
            except Exception as error:  # pymilvus raises MilvusException subclasses without an errno
                raise ProdrecError(_connect_failure(uri, local, error)) from None
    return _CLIENTS[key]


def _connect_failure(uri: str, local: bool, error: Exception) -> str:
    reason = getattr(error, "message", None) or str(error)
    if local and "open local milvus failed" in reason.lower():
        return (f"cannot open the Milvus Lite gallery {uri}: another process has it open (Milvus Lite allows one "
                f"process per .db folder, e.g. a running prodrec serve). Stop that process, send changes to the "
                f"server (POST /products), or share it: run `milvus-lite server --data-dir {uri} --host 127.0.0.1 "
                f"--port 19530` and use --uri http://127.0.0.1:19530")
    if local:
        return f"cannot open the Milvus Lite gallery {uri} ({reason}); is milvus-lite installed (pip install 'prodrec[milvus]')?"
    return (f"cannot reach the Milvus server at {uri} ({reason}); start it or correct --uri (http://HOST:19530), and set "
            f"${TOKEN_ENV} or ${TOKEN_FILE_ENV} if it needs credentials")


def milvus_call(call: Callable[[], _T], where: str, *, missing: Optional[Callable[[], str]] = None) -> _T:
    """``call()``, with a Milvus failure raised as ProdrecError saying ``where`` (``missing()``: the message
    for a collection that does not exist)."""
    from pymilvus.exceptions import MilvusException

    try:
        return call()
    except MilvusException as error:
        reason = getattr(error, "message", None) or str(error)
        if missing is not None and ("not exist" in reason or "not found" in reason.lower()):
            raise ProdrecError(missing()) from None
        if "connect" in reason.lower() or "unavailable" in reason.lower():
            raise ProdrecError(f"{where}: the Milvus server stopped answering ({reason}); check that it runs") from None
        raise ProdrecError(f"{where}: Milvus refused it ({reason})") from None


def check_milvus_index_type(index_type: str, client: Any) -> str:
    """``index_type`` upper-cased when prodrec builds it on this Milvus; else ProdrecError naming the fix."""
    name = str(index_type).upper()
    if name in MILVUS_INDEX_TYPES:
        return name
    lite = is_milvus_lite(client)
    if name in MILVUS_LITE_UNBUILDABLE and lite:
        raise ProdrecError(f"Milvus Lite accepts index type {name} but cannot build it (it fails later, in the "
                           f"background); use one of {sorted(MILVUS_INDEX_TYPES)}, or a Milvus server or cluster")
    if lite or name not in MILVUS_LITE_UNBUILDABLE:
        raise ProdrecError(f"unknown Milvus index type {index_type!r}; use one of {sorted(MILVUS_INDEX_TYPES)}"
                           f"{'' if lite else ' or, on a Milvus server, ' + ', '.join(MILVUS_LITE_UNBUILDABLE)}")
    return name


def is_milvus_lite(client: Any) -> bool:
    """Whether ``client`` talks to Milvus Lite (in this process or as ``milvus-lite server``)."""
    return str(milvus_call(client.get_server_version, "asking the Milvus server its version")).startswith("milvus_lite")


def check_collection_name(name: str) -> None:
    if not (isinstance(name, str) and name and len(name) <= 255 and (name[0].isalpha() or name[0] == "_")
            and all(char.isascii() and (char.isalnum() or char == "_") for char in name)):
        raise ProdrecError(f"a Milvus collection name is letters, digits and underscores, starting with a letter or "
                           f"underscore (at most 255); got {name!r}")
