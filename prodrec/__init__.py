"""prodrec: product recognition by retrieval, on PyTorch.

The rooms follow the data flow: :mod:`prodrec.config` -> :mod:`prodrec.data` -> :mod:`prodrec.models`
-> :mod:`prodrec.losses` -> :mod:`prodrec.retrieval` -> :mod:`prodrec.train` -> :mod:`prodrec.gallery`
-> :mod:`prodrec.paddle` -> :mod:`prodrec.cli`, on the shared ground floor :mod:`prodrec.utils`
(docs/architecture.md). The names below are the main API.

They load on first use: importing torch and timm takes 5-7 s on a 2-core machine
(``../shared/machine-notes.md``), and ``prodrec --help`` or ``import prodrec`` should not pay it.

Example:
    >>> from prodrec import Embedder, load_config, train_metric  # doctest: +SKIP
"""
from importlib import import_module
from typing import Any

__version__ = "0.2.0"

# name -> the room that defines it (loaded on first use; see the module docstring).
_ROOM_OF = {
    "ProdrecError": "prodrec.utils",
    "Config": "prodrec.config",
    "load_config": "prodrec.config",
    "builtin_config_path": "prodrec.config",
    "make_synthetic_inshop": "prodrec.data",
    "Embedder": "prodrec.models",
    "ExportedEmbedder": "prodrec.models",
    "build_loss": "prodrec.losses",
    "WeightedLoss": "prodrec.losses",
    "evaluate": "prodrec.retrieval",
    "extract_embeddings": "prodrec.retrieval",
    "retrieval_metrics": "prodrec.retrieval",
    "knn_search": "prodrec.retrieval",
    "train_metric": "prodrec.train",
    "TrainResult": "prodrec.train",
    "GalleryIndex": "prodrec.gallery",
    "build_gallery": "prodrec.gallery",
    "Recognizer": "prodrec.gallery",
}

__all__ = ["__version__", *_ROOM_OF]


def __getattr__(name: str) -> Any:
    room = _ROOM_OF.get(name)
    if room is None:
        raise AttributeError(f"module 'prodrec' has no attribute {name!r}")
    value = getattr(import_module(room), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(__all__)
