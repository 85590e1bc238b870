import json
import random

import pytest

from prodrec.data import json_listing
from prodrec.data.json_listing import describe, read_images_array


def _all_entries(chunks):
    """A ``collect`` that keeps every entry, and how many chunks it saw."""
    chunks = list(chunks)
    return [entry for chunk in chunks for entry in chunk], len(chunks)


def _read(path, **options):
    problems = []
    read = read_images_array(str(path), _all_entries, problems, **options)
    return read, problems


def _entries(count, *, seed=0):
    rng = random.Random(seed)
    tails = ["", " é", "}, {", '"q', "\u2028", "\\"]  # a space, non-ASCII, JSON syntax, a quote, a line separator
    entries = []
    for _ in range(count):
        entry = {"image_id": f"{rng.getrandbits(64):016x}{rng.choice(tails)}.jpg", "class_id": rng.randrange(50)}
        if rng.random() < 0.2:
            entry = {"class_id": str(entry["class_id"]), "url": "http://x/{a}", "nested": [{"a": "},"}],
                     "image_id": entry["image_id"]}
        entries.append(entry)
    return entries


@pytest.fixture(params=[7, 64, 1 << 23], ids=["chunk7", "chunk64", "chunk8M"])
def chunk_chars(request, monkeypatch):
    """Chunks of 64 characters (entries straddle chunk boundaries) and of the default size; 7 is shorter than the
    ``{"images": [`` head, which makes the reader parse the file whole."""
    monkeypatch.setattr(json_listing, "CHUNK_CHARS", request.param)
    return request.param


@pytest.mark.parametrize("options", [{}, {"indent": 2}, {"separators": (",", ":")}, {"ensure_ascii": False},
                                     {"indent": "\t", "ensure_ascii": False}], ids=str)
def test_chunks_hold_the_entries_json_load_reads_whatever_the_formatting(tmp_path, chunk_chars, options):
    entries = _entries(300)
    (tmp_path / "l.json").write_text(json.dumps({"images": entries}, **options), encoding="utf-8")
    (read, _), problems = _read(tmp_path / "l.json")
    assert read == entries and problems == []


def test_a_plain_listing_is_read_a_chunk_at_a_time(tmp_path, chunk_chars):
    entries = [{"image_id": f"{i:032x}.jpg", "class_id": f"{i % 7:05d}"} for i in range(100)]
    (tmp_path / "l.json").write_text(json.dumps({"images": entries}))
    (read, chunks), _ = _read(tmp_path / "l.json")
    assert read == entries and (chunks > 50 if chunk_chars == 64 else chunks == 1)


@pytest.mark.parametrize("text", [
    '\ufeff{"images": [{"image_id": "a.jpg", "class_id": 1}, {"image_id": "b.jpg", "class_id": 2}]}',
    '{"info": {"images": []}, "images": [{"image_id": "a.jpg", "class_id": 1}, {"image_id": "b.jpg", "class_id": 2}]}',
    '{"images": [{"image_id": "a.jpg", "class_id": 1}, {"image_id": "b.jpg", "class_id": 2}], "images": '
    '[{"image_id": "c.jpg", "class_id": 3}]}',
    '{"images": [{"image_id": "a.jpg", "class_id": 1}, {"image_id": "b.jpg", "class_id": 2}], "more": [{"x": 1}]}',
    '{"images": [{"image_id": "\\u00e9}, {.jpg", "class_id": 1}, {"image_id": "b.jpg", "class_id": 2}]}',
    '{"images": []}',
], ids=["bom", "other-key-first", "images-twice", "key-after", "escapes", "empty"])
def test_any_valid_json_is_read_as_the_json_module_reads_it(tmp_path, chunk_chars, text):
    (tmp_path / "l.json").write_text(text, encoding="utf-8")
    with open(tmp_path / "l.json", encoding="utf-8-sig") as file:
        expected = json.load(file)["images"]
    (read, _), problems = _read(tmp_path / "l.json")
    assert read == expected and problems == []


def test_collect_runs_again_on_the_whole_array_when_the_chunks_give_up(tmp_path, monkeypatch):
    monkeypatch.setattr(json_listing, "CHUNK_CHARS", 64)
    entries = [{"image_id": f"{i}.jpg", "class_id": i} for i in range(20)]
    (tmp_path / "l.json").write_text(json.dumps({"images": entries, "images2": 1})[:-1] + ', "images": []}')
    calls = []

    def collect(chunks):
        calls.append([])
        for chunk in chunks:
            calls[-1].append(len(chunk))
        return calls[-1]

    assert read_images_array(str(tmp_path / "l.json"), collect, []) == [0]  # the second "images" wins, as in json
    assert len(calls) == 2 and sum(calls[0]) > 0


@pytest.mark.parametrize("text, expected", [
    ('{"images": [{"image_id": "a.jpg", "class_id": 1}, {"image_id": "b.jpg" "class_id": 1}]}',
     "not valid JSON: Expecting ',' delimiter: line 1 column 72"),
    ('{"images": [{"image_id": "a.jpg", "class_id": 1}]', "not valid JSON: Expecting ',' delimiter"),
    ('[{"image_id": "a.jpg", "class_id": 1}]', 'expected {"images": [<entry>, ...]}, got list at the top level'),
    ('{"files": [], "info": 1}', "got an object without \"images\" (keys 'files', 'info')"),
    ('{"images": {"a.jpg": 1}}', 'got "images": dict'),
], ids=["syntax", "unclosed", "list", "no-images", "images-dict"])
def test_invalid_json_names_the_file_and_what_is_wrong(tmp_path, chunk_chars, text, expected):
    (tmp_path / "l.json").write_text(text)
    read, problems = _read(tmp_path / "l.json", entry_form="<entry>")
    assert read is None and len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'l.json'}: ") and expected in problems[0]


def test_a_trailing_comma_is_an_error_even_right_at_a_chunk_end(tmp_path, monkeypatch):
    monkeypatch.setattr(json_listing, "CHUNK_CHARS", 64)
    entries = ", ".join(f'{{"image_id": "{c}.jpg", "class_id": 1}}' for c in "abc") + ","
    padding = " " * (-len('{"images": [' + entries) % 64)  # the last chunk holds only "]}"
    (tmp_path / "l.json").write_text(text := '{"images": [' + padding + entries + "]}")
    with pytest.raises(json.JSONDecodeError) as error:
        json.loads(text)
    assert _read(tmp_path / "l.json") == (None, [f"{tmp_path / 'l.json'}: not valid JSON: {error.value}"])


def test_not_utf8(tmp_path):
    (tmp_path / "l.json").write_bytes(b'{"images": [{"image_id": "\xe9.jpg", "class_id": 1}]}')
    read, problems = _read(tmp_path / "l.json")
    assert read is None and problems == [f"{tmp_path / 'l.json'}: not a UTF-8 text file (invalid continuation "
                                         "byte at byte 26)"]


def test_describe_writes_scalars_as_json_and_names_containers():
    assert [describe(v) for v in ("a", 1, 2.5, True, None, [1], {"a": 1})] == [
        '"a"', "1", "2.5", "true", "null", "list", "dict"]
    assert describe("x" * 100) == '"' + "x" * 56 + "..."
