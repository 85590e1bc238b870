"""Gallery building: read a gallery listing, embed its images with an :class:`~prodrec.models.Embedder`, index them.

A gallery listing is an :class:`~prodrec.data.ImageList`, a ``root/<label>/<image>`` folder, a sequence of
``(path, label)`` / ``(path, label, product name)`` tuples, or a list file read by :func:`read_gallery_list`.
The index remembers which model embedded it (:func:`embedder_info`) and refuses images or queries embedded
by another one, whose features would not be comparable. An exported model
(:class:`~prodrec.models.ExportedEmbedder`) carries its source model's record, so it may stand in for it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from prodrec.data import ImageList, raise_problems, read_gallery_list, read_image_folder
from prodrec.gallery.index import GalleryIndex
from prodrec.models import ImageEmbedder
from prodrec.retrieval import extract_embeddings
from prodrec.utils import ProdrecError, ProdrecTypeError

__all__ = ["AnyEmbedder", "GalleryImages", "read_gallery_list", "embedder_info", "check_embedder", "EmbeddedImages",
           "embed_images", "add_embedded", "add_images", "build_gallery"]

AnyEmbedder = ImageEmbedder
"""Any :class:`~prodrec.models.ImageEmbedder`: an :class:`~prodrec.models.Embedder`, an
:class:`~prodrec.models.ExportedEmbedder`, or another implementation of the contract."""
GalleryImages = Union[ImageList, str, os.PathLike, Sequence[Tuple[str, ...]]]
"""An ImageList, a ``root/<label>/<image>`` folder, or ``(path, label[, product name])`` tuples."""


def embedder_info(embedder: AnyEmbedder) -> Dict[str, Any]:
    """What identifies the features a model makes (``embedder.embedder_info``): backbone, embedding size,
    preprocessing, weights hash. An exported model gives the record of the model it was exported from."""
    if not isinstance(embedder, ImageEmbedder):
        raise ProdrecTypeError(f"expected an ImageEmbedder (an Embedder or an ExportedEmbedder), got "
                               f"{type(embedder).__name__}")
    return embedder.embedder_info


def check_embedder(gallery: GalleryIndex, embedder: AnyEmbedder) -> Dict[str, Any]:
    """``embedder_info(embedder)`` after checking that ``embedder`` made (or may make) the gallery's features.

    Raises:
        ValueError: Another embedding size, or another model than the one recorded in the gallery.
    """
    info = embedder_info(embedder)
    _check_info(gallery, info, embedder.embedding_size)
    return info


def _check_info(gallery: GalleryIndex, info: Dict[str, Any], embedding_size: int) -> None:
    if embedding_size != gallery.dim:
        raise ProdrecError(f"the model makes {embedding_size}-d features but the gallery holds "
                           f"{gallery.dim}-d ones; use the model the gallery was built with")
    recorded = gallery.embedder_info
    if recorded is not None and recorded != info:
        differ = sorted(key for key in info if recorded.get(key) != info[key])
        raise ProdrecError(f"the gallery was built with another model (differs in {', '.join(differ)}): its "
                           "features are not comparable with this model's. Use the gallery's model, or rebuild "
                           "the gallery with this one")


@dataclass(frozen=True)
class EmbeddedImages:
    """Gallery images embedded and ready to add: L2-normalised ``features`` ``[N, D]``, each image's label,
    product name (or None) and path, and what embedded them (:func:`embedder_info`)."""

    features: np.ndarray
    labels: List[str]
    names: Optional[List[Optional[str]]]
    paths: List[str]
    embedder_info: Dict[str, Any]


def embed_images(embedder: AnyEmbedder, images: GalleryImages, *, batch_size: int = 64, num_workers: int = 0,
                 progress: bool = True) -> EmbeddedImages:
    """Embed gallery images (:data:`GalleryImages`) with ``embedder`` on its device, to add them later, e.g.
    inside :meth:`GalleryIndex.update <prodrec.gallery.GalleryIndex.update>` so the write lock is held only
    while adding."""
    info = embedder_info(embedder)
    features, metadata = _embed(embedder, images, batch_size=batch_size, num_workers=num_workers, progress=progress)
    return EmbeddedImages(features, metadata["labels"], metadata["names"], metadata["paths"], info)


def add_embedded(gallery: GalleryIndex, embedded: EmbeddedImages) -> np.ndarray:
    """Add :func:`embed_images`'s result to ``gallery`` (its model checked as :func:`check_embedder` does);
    returns the new ids."""
    _check_info(gallery, embedded.embedder_info, embedded.features.shape[1])
    ids = gallery.add(embedded.features, embedded.labels, names=embedded.names, paths=embedded.paths)
    if len(gallery) == len(ids):
        gallery.embedder_info = embedded.embedder_info
    return ids


def add_images(gallery: GalleryIndex, embedder: AnyEmbedder, images: GalleryImages, *, batch_size: int = 64,
               num_workers: int = 0, progress: bool = True) -> np.ndarray:
    """Embed gallery images with ``embedder`` (checked by :func:`check_embedder`; on its device) and add
    them; returns their ids."""
    check_embedder(gallery, embedder)
    return add_embedded(gallery, embed_images(embedder, images, batch_size=batch_size, num_workers=num_workers,
                                              progress=progress))


def build_gallery(embedder: AnyEmbedder, images: GalleryImages, *, index_type: str = "Flat", metric: str = "ip",
                  keep_features: bool = True, batch_size: int = 64, num_workers: int = 0,
                  progress: bool = True, into: Optional[Any] = None) -> Any:
    """A new gallery of ``images`` embedded by ``embedder`` (on its device); IVF types are trained on them.

    Args:
        embedder: The model whose features the gallery holds (queries must use the same one), or its export.
        images: :data:`GalleryImages`.
        index_type: See :class:`~prodrec.gallery.GalleryIndex`.
        metric: ``"ip"`` (cosine) or ``"l2"``.
        keep_features: Keep the features for :meth:`~prodrec.gallery.GalleryIndex.rebuild`.
        batch_size: Images per forward pass.
        num_workers: DataLoader workers that decode images (an exported model decodes in this process).
        progress: Show a progress bar.
        into: An empty gallery to fill instead of a new faiss one (e.g. a
            :class:`~prodrec.gallery.MilvusGallery`; ``index_type``, ``metric`` and ``keep_features`` are then its own).
    """
    if into is not None and len(into):
        raise ProdrecError(f"build_gallery fills an empty gallery; {into!r} holds {len(into)} images (add_images adds)")
    gallery = into if into is not None else GalleryIndex(embedder.embedding_size, index_type=index_type, metric=metric,
                                                         keep_features=keep_features)
    if embedder.embedding_size != gallery.dim:
        raise ProdrecError(f"the model makes {embedder.embedding_size}-d features but the gallery holds {gallery.dim}-d "
                           "ones; make the gallery with the model's embedding size")
    features, metadata = _embed(embedder, images, batch_size=batch_size, num_workers=num_workers, progress=progress)
    if not gallery.is_trained:
        gallery.train(features)
    gallery.add(features, **metadata)
    gallery.embedder_info = embedder_info(embedder)
    return gallery


def _embed(embedder: AnyEmbedder, images: GalleryImages, *, batch_size: int, num_workers: int,
           progress: bool) -> Tuple[np.ndarray, Dict[str, list]]:
    """Features of the images and the ``labels``, ``names``, ``paths`` keywords of :meth:`GalleryIndex.add`."""
    listing, names = _listing(images)
    features = extract_embeddings(embedder, listing, desc="embed gallery", batch_size=batch_size,
                                  num_workers=num_workers, progress=progress)
    labels = [listing.classes[i] for i in listing.labels]
    return features, {"labels": labels, "names": names, "paths": list(listing.paths)}


def _listing(images: GalleryImages) -> Tuple[ImageList, Optional[List[Optional[str]]]]:
    """The images as an ImageList (labels as class names) and their product names (None: no names)."""
    if isinstance(images, ImageList):
        if not len(images):
            raise ProdrecError("the gallery ImageList is empty; give at least one image")
        return images, None
    if isinstance(images, (str, os.PathLike)):
        if os.path.isfile(images):
            raise ProdrecError(f"{os.fspath(images)} is a file; pass a gallery list through read_gallery_list "
                               "(build_gallery(model, read_gallery_list(PATH))), or a folder of root/<label>/<image>")
        return read_image_folder(images), None
    images, problems = list(images), []
    for number, item in enumerate(images):
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            problems.append(f"item {number}: expected (path, label) or (path, label, name), got {item!r:.100}")
        elif not isinstance(item[0], (str, os.PathLike)) or not os.path.isfile(item[0]):
            problems.append(f"item {number}: image not found: {item[0]!r}")
        elif not (isinstance(item[1], str) and item[1]) or not all(isinstance(n, (str, type(None))) for n in item[2:]):
            problems.append(f"item {number}: the label must be a non-empty string and the name a string or None, "
                            f"got {item!r:.100}")
    if not images:
        problems.append("no images given")
    raise_problems(problems, "invalid gallery images")
    paths = [os.path.abspath(os.fspath(item[0])) for item in images]
    listing = ImageList.from_names(paths, [item[1] for item in images])
    return listing, [item[2] if len(item) == 3 else None for item in images]
