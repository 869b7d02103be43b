"""The tutorial notebooks run top to bottom (trimmed by SLOWLEARN_SMOKE=1) and are committed executed."""
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "nbs").glob("*.ipynb"))
SHARED_CIFAR = Path(__file__).parents[2] / "shared" / "data" / "cifar10-jpg-train.zip"


def cifar_available() -> bool:
    root = Path(os.environ.get("SLOWLEARN_DATA", Path.home() / ".cache" / "slowlearn"))
    return SHARED_CIFAR.exists() or (root / "cifar10" / "train").is_dir() or (root / "cifar-10-batches-py").is_dir()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_with_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count is not None for cell in code), "re-run the notebook and commit it"
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, fashion_folder, monkeypatch):
    if "cifar" in path.name and not cifar_available():
        pytest.skip("CIFAR-10 is not on this machine (../shared/data/cifar10-jpg-*.zip or $SLOWLEARN_DATA)")
    monkeypatch.setenv("SLOWLEARN_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    assert not [o for cell in nb.cells for o in cell.get("outputs", []) if o.output_type == "error"]
