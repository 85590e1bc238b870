"""Gallery: the searchable index of known product photos (faiss generations in a folder, or a Milvus collection),
search filters, building it, its calibrated threshold, and the Recognizer."""
from prodrec.gallery.calibrate import Calibration, held_out_outcomes, calibrate_gallery
from prodrec.gallery.store import GALLERY_FORMAT, GALLERY_VERSION, GALLERY_FILES, write_generation, read_generation
from prodrec.gallery.folder import GalleryFolder, CURRENT_FILE, LOCK_FILE, BACKEND_FILE
from prodrec.gallery.filters import FILTER_FIELDS, GalleryFilter, parse_filter
from prodrec.gallery.index import (GalleryIndex, SearchResult)
from prodrec.gallery.milvus_client import TOKEN_ENV, TOKEN_FILE_ENV, MILVUS_INDEX_TYPES
from prodrec.gallery.milvus import MilvusGallery, DEFAULT_COLLECTION
from prodrec.gallery.backends import (BACKENDS, FaissBackend, MilvusBackend, gallery_backend, open_gallery,
                                      update_gallery, create_milvus_gallery, record_milvus_gallery)
from prodrec.gallery.build import (AnyEmbedder, GalleryImages, read_gallery_list, embedder_info, check_embedder,
                                   EmbeddedImages, embed_images, add_embedded, add_images, build_gallery)
from prodrec.gallery.migrate import copy_gallery, compare_galleries
from prodrec.gallery.drawing import draw_recognitions
from prodrec.gallery.recognizer import (UNKNOWN, DEFAULT_THRESHOLD, Match, Recognition, Recognizer, suppress_duplicates,
                                        read_inshop_boxes)

__all__ = ["Calibration", "held_out_outcomes", "calibrate_gallery", "GALLERY_FORMAT", "GALLERY_VERSION", "GALLERY_FILES", "write_generation", "read_generation", "GalleryFolder",
           "CURRENT_FILE", "LOCK_FILE", "BACKEND_FILE", "FILTER_FIELDS", "GalleryFilter", "parse_filter", "GalleryIndex",
           "SearchResult", "TOKEN_ENV", "TOKEN_FILE_ENV", "MilvusGallery", "MILVUS_INDEX_TYPES", "DEFAULT_COLLECTION",
           "BACKENDS", "FaissBackend", "MilvusBackend", "gallery_backend", "open_gallery", "update_gallery",
           "create_milvus_gallery", "record_milvus_gallery",
           "AnyEmbedder", "GalleryImages", "read_gallery_list", "embedder_info", "check_embedder", "EmbeddedImages",
           "embed_images", "add_embedded", "add_images",
           "build_gallery", "UNKNOWN", "DEFAULT_THRESHOLD", "Match", "Recognition", "Recognizer", "suppress_duplicates",
           "read_inshop_boxes", "draw_recognitions", "copy_gallery", "compare_galleries"]
