from pathlib import Path

from slowlearn.data.common import data_root


def test_the_data_folder_is_the_argument_then_slowlearn_data_then_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLOWLEARN_DATA", str(tmp_path))
    assert data_root("elsewhere") == Path("elsewhere")
    assert data_root(None) == tmp_path
    assert data_root() == tmp_path
    monkeypatch.delenv("SLOWLEARN_DATA")
    assert data_root(None) == Path.home() / ".cache" / "slowlearn"


def test_an_empty_slowlearn_data_is_unset_not_the_current_folder(monkeypatch):
    monkeypatch.setenv("SLOWLEARN_DATA", "")
    assert data_root(None) == Path.home() / ".cache" / "slowlearn"
