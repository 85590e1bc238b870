"""benchmarks/eval_scale.py runs end to end on a small synthetic set and writes what it promises."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_scale.py"


def test_every_case_reports_time_memory_and_metrics(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--gallery", "800", "--queries", "60", "--dim", "16", "--classes", "80",
         "--ivf-lists", "8", "--nprobe", "8", "--dtype", "float16", "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    runs = {run["case"]: run for run in results["runs"]}
    assert list(runs) == ["exact", "exact_recall", "knn_faiss", "knn_torch", "ivf"]
    for run in runs.values():
        assert run["seconds"] > 0 and run["peak_rss_mib"] >= run["rss_before_mib"] > 0
    exact = runs["exact"]["metrics"]
    assert 0 < exact["recall@1"] < 1 and 0 < exact["mAP"] < 1
    for case in ("exact_recall", "knn_faiss", "knn_torch", "ivf"):  # nprobe = all lists: exhaustive too
        assert {k: runs[case]["metrics"][f"recall@{k}"] for k in (1, 5, 10, 20)} == {
            k: exact[f"recall@{k}"] for k in (1, 5, 10, 20)}, case
    assert "mAP" not in runs["exact_recall"]["metrics"] and "mAP@100" in runs["ivf"]["metrics"]
    table = (tmp_path / "out" / "results.md").read_text()
    assert table.count("\n| ") == 7 and f"Command: `{results['command']}`" in table
    assert not any(tmp_path.glob("**/*.npy"))  # the feature files live in a temporary folder


def test_rejects_unknown_cases(tmp_path):
    completed = subprocess.run([sys.executable, str(SCRIPT), "--cases", "exact,hnsw", "--output", str(tmp_path)],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2 and "unknown cases ['hnsw']" in completed.stderr
