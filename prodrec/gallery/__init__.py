"""Gallery: the searchable index of known product photos, its on-disk generations (one writer at a time),
building it, its calibrated threshold, and the Recognizer."""
from prodrec.gallery.calibrate import Calibration, held_out_outcomes, calibrate_gallery
from prodrec.gallery.store import GALLERY_FORMAT, GALLERY_VERSION, GALLERY_FILES, write_generation, read_generation
from prodrec.gallery.folder import GalleryFolder, CURRENT_FILE, LOCK_FILE
from prodrec.gallery.index import (GalleryIndex, SearchResult)
from prodrec.gallery.build import (AnyEmbedder, GalleryImages, read_gallery_list, embedder_info, check_embedder,
                                   EmbeddedImages, embed_images, add_embedded, add_images, build_gallery)
from prodrec.gallery.drawing import draw_recognitions
from prodrec.gallery.recognizer import (UNKNOWN, DEFAULT_THRESHOLD, Match, Recognition, Recognizer, suppress_duplicates,
                                        read_inshop_boxes)

__all__ = ["Calibration", "held_out_outcomes", "calibrate_gallery", "GALLERY_FORMAT", "GALLERY_VERSION", "GALLERY_FILES", "write_generation", "read_generation", "GalleryFolder",
           "CURRENT_FILE", "LOCK_FILE", "GalleryIndex", "SearchResult",
           "AnyEmbedder", "GalleryImages", "read_gallery_list", "embedder_info", "check_embedder", "EmbeddedImages",
           "embed_images", "add_embedded", "add_images",
           "build_gallery", "UNKNOWN", "DEFAULT_THRESHOLD", "Match", "Recognition", "Recognizer", "suppress_duplicates",
           "read_inshop_boxes", "draw_recognitions"]
