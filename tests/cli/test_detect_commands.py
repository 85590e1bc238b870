import json

from prodrec.data import read_coco


def test_make_shelves_writes_a_coco_set(tmp_path, run_cli):
    out = run_cli(["make-shelves", tmp_path / "shelves", "--scenes", 3, "--synthetic-items", 10, "--width", 256,
                   "--height", 192, "--seed", 2, "--quiet"])
    assert out.startswith("wrote 3 scenes with ") and "annotations.json" in out
    found = read_coco(tmp_path / "shelves" / "annotations.json", tmp_path / "shelves")
    assert len(found) == 3 and len(list((tmp_path / "shelves" / "images").glob("*.jpg"))) == 3
    assert json.loads((tmp_path / "shelves" / "annotations.json").read_text())["annotations"][0]["product"].startswith("id_")
