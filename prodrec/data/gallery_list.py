"""Gallery lists: ``path label [product name]`` lines (PP-ShiTu's, tab-separated, or space-separated), read by
the one list reader (:func:`prodrec.data.lists.parse_list`) with this grammar."""
from __future__ import annotations

import os
from typing import Optional

from prodrec.data.dataset import raise_problems
from prodrec.data.lists import existing_paths, parse_list
from prodrec.utils import ProdrecError

__all__ = ["read_gallery_list", "read_unknown_list"]


def read_gallery_list(list_path: str | os.PathLike, *, image_root: str | os.PathLike | None = None,
                      check_files: bool = True, allow_outside_root: bool = False) -> list[tuple[str, str, Optional[str]]]:
    """Read ``path label [product name]`` lines into ``(absolute path, label, name or None)`` tuples.

    Fields are separated by whitespace, and the product name is the rest of the line (it may contain spaces).
    A line with a tab is split at tabs instead (PP-ShiTu's gallery lists), so paths may contain spaces there.
    Labels are any text. Blank lines are skipped; every problem (a missing field, a duplicate or missing
    image, an image outside the image root) is reported at once, as :func:`read_image_list` does.

    Args:
        list_path: The list file.
        image_root: Folder the paths are relative to; defaults to the list's folder.
        check_files: Also check that every listed image exists.
        allow_outside_root: Accept paths that resolve outside ``image_root`` (``../``, absolute paths,
            symlinks out of it); refused by default, so a list cannot reach files it was not meant to.
    """
    list_path = existing_paths([list_path], "gallery list")[0]
    root = os.path.dirname(list_path) if image_root is None else os.path.abspath(os.fspath(image_root))
    named: set[str] = set()  # paths of lines split at spaces into path, label and name

    def entry(text: str, tabbed: bool) -> tuple[str, tuple[str, Optional[str]]]:
        name, value = _gallery_entry(text, tabbed)
        if not tabbed and value[1] is not None:
            named.add(name)
        return name, value

    paths, entries, problems = parse_list(list_path, root, check_files, None if allow_outside_root else root,
                                          entry=entry, outside_fix="pass --allow-outside-root "
                                                                  "(read_gallery_list(..., allow_outside_root=True))")
    spaced = sorted(name for name in named if not os.path.isfile(os.path.join(root, name)))
    if problems and spaced:
        problems.append(f"{len(spaced)} line(s) whose image is missing separate path, label and product name with "
                        f"spaces (first: {spaced[0]!r}); if a path contains spaces, separate the fields with tabs: "
                        "path<TAB>label<TAB>name")
    raise_problems(problems, f"invalid gallery list {list_path}")
    return [(path, label, name) for path, (label, name) in zip(paths, entries)]


def read_unknown_list(list_path: str | os.PathLike, *, image_root: str | os.PathLike | None = None,
                      allow_outside_root: bool = False) -> list[tuple[str, Optional[str]]]:
    """Read ``path [label]`` lines (images of products a gallery does not hold) into ``(absolute path, label or
    None)`` tuples, with :func:`read_gallery_list`'s grammar and checks (every image must exist)."""
    list_path = existing_paths([list_path], "list of unknown-product images")[0]
    root = os.path.dirname(list_path) if image_root is None else os.path.abspath(os.fspath(image_root))

    def entry(text: str, tabbed: bool) -> tuple[str, Optional[str]]:
        fields = [field.strip() for field in text.split("\t")] if tabbed else text.split()
        if not fields[0] or len(fields) > 2:
            raise ProdrecError(f"expected 'path [label]' (a tab between them when the path has spaces), got {text!r}")
        return fields[0], fields[1] if len(fields) == 2 and fields[1] else None

    paths, labels, problems = parse_list(list_path, root, True, None if allow_outside_root else root, entry=entry,
                                         outside_fix="pass --allow-outside-root")
    raise_problems(problems, f"invalid list {list_path}")
    return list(zip(paths, labels))


def _gallery_entry(text: str, tabbed: bool) -> tuple[str, tuple[str, Optional[str]]]:
    fields = [field.strip() for field in text.split("\t")] if tabbed else text.split(maxsplit=2)
    if len(fields) < 2 or not all(fields[:2]) or len(fields) > 3:
        raise ProdrecError(f"expected 'path label [product name]', got {text!r}")
    return fields[0], (fields[1], (fields[2].strip() or None) if len(fields) == 3 else None)
