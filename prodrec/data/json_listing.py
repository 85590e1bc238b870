"""The ``"images"`` array of a JSON listing (``{"images": [...], ...}``), read in chunks of whole entries.

Each chunk is parsed by the stdlib ``json`` module, so a 2.5 M-entry listing needs a few MB of chunk at a time
instead of millions of dicts at once. A file whose ``"images"`` array is not the first member (or that the chunks
cannot cover exactly) is parsed whole, so any valid JSON is read as ``json.load`` reads it.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable, Iterable, Iterator, TypeVar

__all__ = ["CHUNK_CHARS", "read_images_array", "describe"]

CHUNK_CHARS = 1 << 21
_WS = r"[ \t\n\r]*"  # JSON whitespace (``\s`` would accept more)
_HEAD = re.compile(_WS + r"\{" + _WS + r'"images"' + _WS + ":" + _WS + r"\[")
_COMMA = re.compile(_WS + ",")
_DECODER = json.JSONDecoder()

T = TypeVar("T")


class _NotChunkable(Exception):
    """The listing cannot be read in chunks; parse it whole."""


def read_images_array(path: str, collect: Callable[[Iterable[list]], T], problems: list[str], *,
                      entry_form: str = "...") -> T | None:
    """``collect(chunks)`` over the ``"images"`` array of the JSON file ``path``, a list of entries at a time.

    ``collect`` may be called twice: if the chunked read gives up half-way, its result is dropped and it is called
    again with the whole array as one chunk, so it must report through its result, not through side effects.

    Args:
        path: The JSON listing (UTF-8, with or without a byte order mark).
        collect: Consumes the chunks (lists of entries, in order) and returns the reader's result.
        problems: Where a file that is not UTF-8, not JSON or without an ``"images"`` array is reported.
        entry_form: How an entry looks, for that report.

    Returns:
        What ``collect`` returned, or None (with a problem in ``problems``) if there is no ``"images"`` array.
    """
    try:
        return collect(_chunks(path))
    except _NotChunkable:
        pass
    images = _load_whole(path, problems, entry_form)
    return None if images is None else collect([images])


def describe(value: Any) -> str:
    """A JSON value as written (scalars; at most 60 characters) or its Python type name (containers)."""
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _load_whole(path: str, problems: list[str], entry_form: str) -> list | None:
    """The ``"images"`` array of ``path`` parsed in one piece, or None (with a problem) if there is none."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            document = json.load(file)
    except UnicodeDecodeError as error:
        problems.append(f"{path}: not a UTF-8 text file ({error.reason} at byte {error.start})")
        return None
    except json.JSONDecodeError as error:
        problems.append(f"{path}: not valid JSON: {error}")
        return None
    images = document.get("images") if isinstance(document, dict) else None
    if isinstance(images, list):
        return images
    if not isinstance(document, dict):
        got = f"{describe(document)} at the top level"
    elif "images" not in document:
        got = f'an object without "images" (keys {", ".join(map(repr, list(document)[:10]))})'
    else:
        got = f'"images": {describe(images)}'
    problems.append(f'{path}: expected {{"images": [{entry_form}, ...]}}, got {got}')
    return None


def _chunks(path: str) -> Iterator[list]:
    """The ``"images"`` array of ``path`` as lists of entries, a chunk of whole entries at a time.

    A chunk ends at a ``}`` followed by a comma. If that ``}`` were inside a string or a nested value, the chunk
    (which starts at an entry) would not be valid JSON, so every chunk that parses holds whole entries.

    Raises:
        _NotChunkable: The file does not start with ``{"images": [``, or a chunk or its end does not parse.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            head = file.read(CHUNK_CHARS)
            start = _HEAD.match(head)
            if start is None:
                raise _NotChunkable
            buffer = head[start.end():]
            cut_before = False
            while more := file.read(CHUNK_CHARS):
                cut = _last_entry_end(buffer)
                if cut is not None:
                    yield json.loads(f"[{buffer[:cut[0]]}]")
                    buffer = buffer[cut[1]:]
                    cut_before = True
                buffer += more
        entries, end = _DECODER.raw_decode(f"[{buffer}")
        # A comma before an empty rest is a trailing comma; the rest must close the top-level object, with no
        # second "images" member.
        members = json.loads('{"images": null' + buffer[end - 1:], object_pairs_hook=lambda pairs: pairs)
        if (cut_before and not entries) or [key for key, _ in members].count("images") != 1:
            raise _NotChunkable
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _NotChunkable from None
    yield entries


def _last_entry_end(buffer: str) -> tuple[int, int] | None:
    """``(end of the last "}" followed by a comma, end of that comma)`` in ``buffer``, or None."""
    brace = buffer.rfind("}")
    while brace != -1:
        comma = _COMMA.match(buffer, brace + 1)
        if comma is not None:
            return brace + 1, comma.end()
        brace = buffer.rfind("}", 0, brace)
    return None
