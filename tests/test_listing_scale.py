"""benchmarks/listing_scale.py runs end to end at a small size and reports what it promises."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from prodrec.data import read_aliproducts

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "listing_scale.py"


def test_listing_scale_reads_every_entry_with_every_reader(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run([sys.executable, str(SCRIPT), "--entries", "3000", "--classes", "60", "--json",
                                str(tmp_path / "out.json")], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = json.loads((tmp_path / "out.json").read_text())
    assert (results["entries"], results["classes"]) == (3000, 60)
    assert [run["reader"] for run in results["runs"]] == ["json", "list", "json.load"]
    for run in results["runs"]:
        assert (run["images"], run["classes"]) == (3000, 60)
        assert run["wall_s"] >= 0 and run["peak_rss_mb"] >= run["import_rss_mb"] > 0
        assert f"{run['reader']:<10} {3000:>10,}" in completed.stdout


def test_the_generated_listings_agree(tmp_path):
    spec = importlib.util.spec_from_file_location("listing_scale", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.write_listings(tmp_path, 500, 40)
    from_json, from_list = read_aliproducts(tmp_path, num_classes=40), read_aliproducts(tmp_path, "train_list.txt",
                                                                                        num_classes=40)
    assert from_json.paths == from_list.paths and from_json.labels.tolist() == from_list.labels.tolist()
    assert set(from_json.labels.tolist()) == set(range(40))
