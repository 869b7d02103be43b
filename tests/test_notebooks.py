"""The tutorial notebooks run top to bottom (trimmed by SLOWLEARN_SMOKE=1), are committed executed, and print
in smoke mode what they printed when their outputs were last made (`make notebooks`): a code change that
changes what they print leaves the committed outputs stale."""
import importlib.util
import json
import os
from pathlib import Path

import nbformat
import pytest

from slowlearn.data import data_root

NBS = Path(__file__).parent.parent / "nbs"
NOTEBOOKS = sorted(NBS.glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("execute_notebooks", NBS / "execute.py")
execute_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute_notebooks)
SHARED_CIFAR = Path(__file__).parents[2] / "shared" / "data" / "cifar10-jpg-train.zip"
NEEDS_CIFAR = ("04_cifar10.ipynb", "05_fine_tuning.ipynb")
NEEDS_CIFAR_JPEGS = ("05_fine_tuning.ipynb",)  # copies CIFAR-10's image files into a folder of its own


@pytest.fixture
def kernel_environment(monkeypatch):
    """Restores, after the test, the variables that execute() sets for the kernel."""
    for name in ("SLOWLEARN_SMOKE", "MPLBACKEND", "SLOWLEARN_NATIVE_BF16"):
        monkeypatch.setenv(name, os.environ.get(name, ""))


def cifar_available(jpegs: bool = False) -> bool:
    """CIFAR-10 as JPEG files (shared zips or unpacked), or, unless `jpegs`, as torchvision's python batches."""
    root = data_root()
    return (SHARED_CIFAR.exists() or (root / "cifar10" / "train").is_dir()
            or not jpegs and (root / "cifar-10-batches-py").is_dir())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_with_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count is not None for cell in code), "re-run the notebook and commit it"
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, fashion_folder, kernel_environment):
    if path.name in NEEDS_CIFAR and not cifar_available(jpegs=path.name in NEEDS_CIFAR_JPEGS):
        pytest.skip("CIFAR-10 is not on this machine (../shared/data/cifar10-jpg-*.zip or $SLOWLEARN_DATA)")
    nb = execute_notebooks.execute(path, smoke=True)
    assert not [o for cell in nb.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    record = json.loads(execute_notebooks.RECORD.read_text()) if execute_notebooks.RECORD.exists() else {}
    assert path.name in record, f"no smoke record for {path.name}: run `make notebooks` (python nbs/execute.py)"
    numbers, cpu = execute_notebooks.recorded(record[path.name])
    same_cpu = cpu is None or cpu == execute_notebooks.cpu_name()  # an entry without its CPU: as strict as before
    stale = execute_notebooks.stale_numbers(execute_notebooks.printed_numbers(nb), numbers, same_cpu)
    assert not stale, (
        f"{path.name} prints other numbers than when its outputs were made: its committed outputs are stale. "
        f"Run `make notebooks` (python nbs/execute.py) and commit the notebooks and nbs/smoke_record.json. "
        + "; ".join(stale))


def test_a_few_numbers_may_move_by_rounding_on_another_cpu():
    recorded = [0.0, 208.0, 0.078, 0.498, 0.1562, 0.6016, 0.6475, 0.6797]
    assert execute_notebooks.stale_numbers(recorded, recorded) == []
    other_cpu = recorded[:6] + [0.6455, 0.6797]  # what CI printed for nbs/03: 4 of 2000 items moved
    assert execute_notebooks.stale_numbers(other_cpu, recorded) == []
    further = recorded[:7] + [0.5797]  # a barely trained model's probability: far, but only on another CPU
    assert execute_notebooks.stale_numbers(further, recorded, same_cpu=False) == []
    assert execute_notebooks.stale_numbers(further, recorded) == ["number 7: 0.5797 printed, 0.6797 recorded"]
    many = [x * 1.1 for x in recorded[1:]]  # a code change moves many: stale on any CPU
    assert "7 of 8 numbers moved" in execute_notebooks.stale_numbers([0.0, *many], recorded, same_cpu=False)[0]


def test_the_record_keeps_the_cpu_that_printed_it():
    assert execute_notebooks.recorded([0.5, 2.0]) == ([0.5, 2.0], None)  # an entry from before
    assert execute_notebooks.recorded({"cpu": "AMD EPYC", "numbers": [0.5]}) == ([0.5], "AMD EPYC")
    assert execute_notebooks.cpu_name()


def test_stale_outputs_are_caught():
    recorded = [0.8838, 0.8512, 0.7, 0.31, 12.0, 0.5, 0.25, 0.125, 0.9, 0.91]
    far = recorded[:-1] + [0.95]
    assert "number 9: 0.95 printed, 0.91 recorded" in execute_notebooks.stale_numbers(far, recorded)
    many = [x * 1.005 for x in recorded]  # the batch-order change moved every accuracy by ~0.5 %
    assert "6 of 10 numbers moved" in execute_notebooks.stale_numbers(many, recorded)[0]
    assert "9 numbers printed" in execute_notebooks.stale_numbers(recorded[:-1], recorded)[0]


def test_printed_numbers_leave_out_timings():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("")])
    printed = "accuracy 0.8773 after 12.3 s (5.6 it/s, 3s), epoch 2 of nbs/03\n"
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed),
                           nbformat.v4.new_output("execute_result", data={"text/plain": "{'loss': 0.31, 'lr': 1e-05}"})]
    assert execute_notebooks.printed_numbers(nb) == [0.8773, 2, 0.31, 1e-05]


def test_smoke_runs_train_as_without_native_bf16_and_full_runs_ask_the_hardware(tmp_path, monkeypatch,
                                                                                  kernel_environment):
    monkeypatch.setattr(execute_notebooks, "USER_NATIVE_BF16", None)
    path = tmp_path / "env.ipynb"
    code = "import os; print(os.environ.get('SLOWLEARN_NATIVE_BF16'))"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), path)
    assert execute_notebooks.execute(path, smoke=True).cells[0].outputs[0].text == "0\n"
    assert execute_notebooks.execute(path, smoke=False).cells[0].outputs[0].text == "None\n"
