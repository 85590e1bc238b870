"""The faiss index types a gallery can use: their names, construction, search knobs and errors.

Flat and HNSW indexes are wrapped in a faiss ``IndexIDMap2`` so images keep stable ids. IVF indexes store
the ids in their inverted lists themselves and are not wrapped: faiss's id map renumbers the wrapped
index's vectors after a removal, which IVF (whose lists keep the old numbers) does not follow, so an id
map over IVF loses vectors once any is removed (PP-ShiTu wraps every type and has that flaw).
"""
from __future__ import annotations

import re
from typing import Any

from prodrec.retrieval.knn import import_faiss
from prodrec.utils import ProdrecError

__all__ = ["INDEX_TYPES", "METRICS", "check_index_type", "new_faiss_index", "search_knob", "faiss_message"]

INDEX_TYPES = {"Flat": r"Flat", "HNSW{M}": r"HNSW[1-9]\d*", "IVF{nlist},Flat": r"IVF[1-9]\d*,Flat",
               "IVF{nlist},PQ{m}": r"IVF[1-9]\d*,PQ[1-9]\d*"}
"""Supported faiss ``index_factory`` names: form -> pattern."""
METRICS = ("ip", "l2")


def check_index_type(index_type: str, dim: int) -> str:
    """``index_type`` if it is a supported faiss ``index_factory`` name for vectors of ``dim``.

    Raises:
        ValueError: Unknown name (the message lists the supported forms), or PQ ``m`` not dividing ``dim``.
    """
    if not isinstance(index_type, str) or not any(re.fullmatch(p, index_type) for p in INDEX_TYPES.values()):
        raise ProdrecError(f"unknown index_type {index_type!r}; supported: Flat (exact), HNSW{{M}} (e.g. HNSW32), "
                           "IVF{nlist},Flat (e.g. IVF1024,Flat), IVF{nlist},PQ{m} (e.g. IVF1024,PQ64; m divides "
                           "the feature dimension)")
    pq = re.search(r"PQ(\d+)$", index_type)
    if pq and dim % int(pq.group(1)):
        raise ProdrecError(f"index_type {index_type!r}: PQ{pq.group(1)} needs a feature dimension divisible by "
                           f"{pq.group(1)}, but it is {dim}; pick m among the divisors of {dim}")
    return index_type


def new_faiss_index(dim: int, index_type: str, metric: str) -> Any:
    """An empty faiss index of a checked ``index_type`` that takes ids (``add_with_ids``, ``remove_ids``)."""
    faiss = import_faiss()
    description = index_type if index_type.startswith("IVF") else f"IDMap2,{index_type}"
    if "PQ" in index_type:  # no polysemous training: it serves Hamming-filtered search only, and takes ~1 min
        description += "np"
    return faiss.index_factory(dim, description, faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2)


def search_knob(index: Any, index_type: str, kind: str) -> Any:
    """The faiss object holding the search parameters of an ``"IVF"`` (``nprobe``) or ``"HNSW"`` (``efSearch``)
    index made by :func:`new_faiss_index`."""
    if not index_type.startswith(kind):
        raise ProdrecError(f"this search parameter applies to {kind} indexes; this one is {index_type}")
    faiss = import_faiss()
    return faiss.extract_index_ivf(index) if kind == "IVF" else faiss.downcast_index(index.index).hnsw


def faiss_message(error: Exception) -> str:
    """faiss's reason without its C++ location (``Error in <function> at <file>:<line>: [Error: '...' failed: ]``)."""
    match = re.match(r"Error in .* at \S+:\d+: (?:Error: '.*?' failed: )?(.*)", str(error), re.DOTALL)
    return (match.group(1) if match else str(error)).strip()
