"""Shared ground floor of every room: errors, argument checks, durable files, registries of named components."""
from prodrec.utils.checks import brief, check_positive_int
from prodrec.utils.errors import ProdrecError, ProdrecRuntimeError, ProdrecTypeError
from prodrec.utils.locks import FileLock, LockBusy
from prodrec.utils.registry import Registry
from prodrec.utils.files import (atomic_write, file_sha256, fsync_folder, is_disk_full, read_torch_file,
                                 remove_temporaries, replace_durably, temporary_path, write_failure)

__all__ = ["ProdrecError", "ProdrecTypeError", "ProdrecRuntimeError", "check_positive_int", "brief",
           "atomic_write", "replace_durably", "fsync_folder", "remove_temporaries", "temporary_path", "is_disk_full", "write_failure",
           "file_sha256", "read_torch_file", "Registry", "FileLock", "LockBusy"]
