"""Gallery: the searchable index of known product photos, its on-disk store, building it, and the Recognizer."""
from prodrec.gallery.store import (GALLERY_FORMAT, GALLERY_VERSION, save_gallery, load_gallery)
from prodrec.gallery.index import (GalleryIndex, SearchResult)
from prodrec.gallery.build import (AnyEmbedder, GalleryImages, read_gallery_list, embedder_info, check_embedder,
                                   add_images, build_gallery)
from prodrec.gallery.recognizer import (UNKNOWN, Match, Recognition, Recognizer, read_inshop_boxes)

__all__ = ["GALLERY_FORMAT", "GALLERY_VERSION", "save_gallery", "load_gallery", "GalleryIndex", "SearchResult",
           "AnyEmbedder", "GalleryImages", "read_gallery_list", "embedder_info", "check_embedder", "add_images",
           "build_gallery", "UNKNOWN", "Match", "Recognition", "Recognizer", "read_inshop_boxes"]
