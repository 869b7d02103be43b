"""What a notebook shows: a figure once per cell; no echo of what was printed already."""
import matplotlib.pyplot as plt
import nbformat
import pytest
from nbclient import NotebookClient

from slowlearn.display import finished, integer_xticks, progress, subplots

CELLS = {
    "setup": "import torch\nfrom torch import nn\nfrom slowlearn import summary\n"
             "from slowlearn.display import finished, subplots\n"
             "def plot():\n    fig, ax = subplots()\n    ax.plot([0, 1])\n    return finished(fig)",
    "mid-cell": "fig = plot()\nprint('after')",
    "last value": "plot()",
    "later cell": "fig",
    "changed": "fig = plot()\nfig.suptitle('changed')\ndisplay(fig)",
    "summary": "summary(nn.Sequential(nn.Linear(3, 2)), torch.randn(4, 3))",
    "summary rows": "summary(nn.Sequential(nn.Linear(3, 2)), torch.randn(4, 3), print_table=False)",
    "summary kept": "rows = summary(nn.Sequential(nn.Linear(3, 2)), torch.randn(4, 3))",
    "summary later": "rows",
    "progress": "from slowlearn.display import progress\nitems = list(progress(range(3), 3, 'decoding'))",
}


@pytest.fixture(scope="module")
def outputs():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code) for code in CELLS.values()])
    with pytest.MonkeyPatch.context() as mp:  # the backend Jupyter uses
        mp.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return {name: cell.outputs for name, cell in zip(CELLS, nb.cells)}


def kinds(outputs):
    return ["png" if "image/png" in o.get("data", {}) else o.output_type for o in outputs]


def test_a_figure_shows_once_per_cell(outputs):
    assert kinds(outputs["mid-cell"]) == ["stream", "png"]  # at the end of the cell, as pyplot figures
    assert kinds(outputs["last value"]) == ["png"]  # returned as the cell's value: not shown twice
    assert kinds(outputs["later cell"]) == ["png"]  # shown again when asked for in another cell
    assert kinds(outputs["changed"]) == ["png"]  # changed, then displayed: once


def test_summary_prints_its_table_once(outputs):
    assert kinds(outputs["summary"]) == ["stream"] and "params" in outputs["summary"][0].text
    assert kinds(outputs["summary rows"]) == ["stream"] and "params" in outputs["summary rows"][0].text
    assert kinds(outputs["summary kept"]) == ["stream"]
    assert kinds(outputs["summary later"]) == ["stream"] and "params" in outputs["summary later"][0].text  # asked again


def test_progress_is_an_html_line_in_a_notebook_and_one_plain_line_in_a_log(outputs, capsys):
    assert [o.output_type for o in outputs["progress"]] == ["display_data"]  # updated in place
    assert "<progress" in outputs["progress"][0].data["text/html"]
    assert list(progress(range(3), 3, "decoding")) == [0, 1, 2]
    captured = capsys.readouterr()
    assert captured.err == "decoding: 3 items\n" and captured.out == ""
    assert list(progress(["one chunk"], 1, "decoding 8 images")) == ["one chunk"]
    assert capsys.readouterr().err == "decoding 8 images: 1 item\n"


def test_figures_stay_open_outside_notebooks(tmp_path):
    fig, ax = subplots()
    assert finished(fig, tmp_path / "a.png").number in plt.get_fignums() and (tmp_path / "a.png").exists()
    fig, ax = subplots()
    assert finished(fig, show=False).number not in plt.get_fignums()


def test_integer_xticks_for_one_point_and_many():
    fig, ax = subplots()
    ax.plot([3], [1.], "o")
    integer_xticks(ax)
    assert list(ax.get_xticks()) == [3]
    fig, ax = subplots()
    ax.plot([0, 1, 2, 3, 4], [1, 2, 3, 4, 5])
    integer_xticks(ax)
    assert all(float(t).is_integer() for t in ax.get_xticks())
