"""prodrec: product recognition by retrieval, on PyTorch.

The public API is re-exported here. Importing ``prodrec`` is cheap: the heavy
modules (torch, timm, faiss) load the first time one of these names is used, so
``prodrec --help`` starts instantly.

Example:
    >>> from prodrec import Embedder, load_config, train_metric  # doctest: +SKIP
"""
from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Embedder": "prodrec.models",
    "Config": "prodrec.config",
    "load_config": "prodrec.config",
    "builtin_config_path": "prodrec.config",
    "build_loss": "prodrec.losses",
    "WeightedLoss": "prodrec.losses",
    "train_metric": "prodrec.training",
    "TrainResult": "prodrec.training",
    "evaluate": "prodrec.evaluation",
    "extract_embeddings": "prodrec.evaluation",
    "retrieval_metrics": "prodrec.metrics",
    "knn_search": "prodrec.search",
    "make_synthetic_inshop": "prodrec.data.synthetic",
    "GalleryIndex": "prodrec.index",
    "Recognizer": "prodrec.recognizer",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'prodrec' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(__all__)
