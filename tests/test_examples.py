"""The notebooks in examples/ run top to bottom with their small default settings."""
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need the dev extras: pip install -e '.[dev]'")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need the dev extras: pip install -e '.[dev]'")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def test_examples_are_stored_clean():
    assert NOTEBOOKS, f"no notebooks found in {EXAMPLES}"
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata.kernelspec.name == "python3", f"{path.name}: kernel must be python3"
        dirty = [index for index, cell in enumerate(notebook.cells)
                 if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
        assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_example_runs(path, tmp_path, monkeypatch):
    output_dir, working_dir = tmp_path / "output", tmp_path / "cwd"
    working_dir.mkdir()
    monkeypatch.setenv("PRODREC_EXAMPLES_DIR", str(output_dir))  # read by each notebook's settings cell
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # One intra-op thread: when other processes share the cores, OpenMP's spinning threads made two-thread
    # torch up to 10x slower than one thread on the 2-core development machine.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(working_dir)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    assert any(output_dir.iterdir()), "the notebook wrote nothing under PRODREC_EXAMPLES_DIR"
    assert not any(working_dir.iterdir()), "the notebook wrote into its working folder, not PRODREC_EXAMPLES_DIR"
    shutil.rmtree(output_dir)  # ResNet50 checkpoints, about 1 GB per notebook; pytest keeps old tmp folders
