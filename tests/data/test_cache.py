"""The decoded-image cache: reused only when nothing changed, rebuilt when anything did or it is damaged."""
import fcntl
import os
import shutil
import stat
import subprocess
import sys

import pytest
import torch
from images import data_folder, make_folder, pixels, save  # noqa: F401 (data_folder: an autouse fixture)

import slowlearn.data.images
import slowlearn.data.labels
from slowlearn.data.cache import remove_stale_partials
from slowlearn.data.images import image_folder


@pytest.fixture
def decodes(monkeypatch):
    """Counts the image decodes (a cached load decodes nothing)."""
    calls = []
    decode = slowlearn.data.images.decode_images
    monkeypatch.setattr(slowlearn.data.images, "decode_images", lambda *a, **k: calls.append(1) or decode(*a, **k))
    return calls


def load(root, **kwargs):
    return image_folder(root, bs=4, device="cpu", verbose=False, **kwargs)


def test_the_cache_is_reused_when_nothing_changed_and_rebuilt_for_other_options(tmp_path, decodes):
    root = make_folder(tmp_path / "pets")
    first = load(root)
    again = load(root)
    assert len(decodes) == 1 and torch.equal(first.train.x, again.train.x)
    resized = load(root, size=6)
    assert len(decodes) == 2 and resized.train.x.shape[-2:] == (6, 6)
    gray = load(root, channels=1)
    assert len(decodes) == 3 and gray.train.x.shape[1] == 1
    load(root, size=6), load(root)
    assert len(decodes) == 3  # each set of options keeps its own cache


def test_a_new_decoder_version_decodes_again(tmp_path, data_folder, decodes, monkeypatch):
    root = make_folder(tmp_path / "pets")
    load(root), load(root)
    monkeypatch.setattr(slowlearn.data.images, "DECODER_VERSION", slowlearn.data.images.DECODER_VERSION + 1)
    load(root)
    assert len(decodes) == 2
    assert len(list((data_folder / "image-cache").glob("*.pt"))) == 1  # the stale file replaced, not one more


def test_a_file_moved_to_another_class_gets_its_new_label(tmp_path, decodes):
    root = make_folder(tmp_path / "pets")
    load(root)
    moved = root / "train" / "dog" / "0.png"
    mtime = moved.stat().st_mtime_ns
    shutil.move(root / "train" / "cat" / "0.png", moved.with_name("9.png"))  # same count, same newest mtime
    os.utime(moved.with_name("9.png"), ns=(mtime, mtime))
    dls = load(root)
    assert len(decodes) == 2 and len(dls.train.x) == 12
    assert dls.train.y.tolist() == [0] * 3 + [1] * 5 + [2] * 4
    assert torch.equal(dls.train.x[7], pixels(moved.with_name("9.png"))) and dls.train.x[7, 0, 0, 0] == 0


def test_a_file_replaced_with_its_old_mtime_kept_is_decoded_again(tmp_path, decodes):
    root = make_folder(tmp_path / "pets")
    load(root)
    target = root / "train" / "frog" / "3.png"
    old = target.stat()
    save(torch.full((3, 12, 12), 200, dtype=torch.uint8), target)
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))  # as `cp -p` or a backup restore would
    dls = load(root)
    assert len(decodes) == 2 and dls.train.x[-1].eq(200).all()


def test_a_damaged_cache_is_rebuilt_not_an_error(tmp_path, data_folder, decodes):
    root = make_folder(tmp_path / "pets")
    expected = load(root).train.x
    for cache in (data_folder / "image-cache").glob("*.pt"):
        cache.write_bytes(cache.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="could not be read .*decoding again"):
        dls = load(root)
    assert len(decodes) == 2 and torch.equal(dls.train.x, expected)
    assert torch.equal(load(root).train.x, expected) and len(decodes) == 2  # and the rebuilt cache is used


def test_a_read_only_image_folder_loads_and_nothing_is_written_into_it(tmp_path):
    """(As root the folder stays writable; then the test checks that nothing was written into it.)"""
    root = make_folder(tmp_path / "pets")
    before = sorted(p for p in root.rglob("*"))
    folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        dls = load(root)
        assert len(dls.train.x) == 12 and sorted(p for p in root.rglob("*")) == before
    finally:
        for folder in folders:
            folder.chmod(stat.S_IRWXU)


def test_an_unwritable_cache_folder_is_a_warning(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "pets")
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("SLOWLEARN_DATA", str(tmp_path / "not-a-folder"))
    with pytest.warns(UserWarning, match="Could not write the image cache"):
        assert len(load(root).train.x) == 12


def test_a_full_disk_while_writing_the_cache_is_a_warning(tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):  # what torch.save raises when the disk fills up
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")
    monkeypatch.setattr(torch, "save", disk_full)
    root = make_folder(tmp_path / "pets")
    with pytest.warns(UserWarning, match="Could not write the image cache .*unexpected pos"):
        assert len(load(root).train.x) == 12
    assert not list((tmp_path / "slowlearn-data" / "image-cache").iterdir())  # no temporary file left behind


KILLED_WRITER = """
import sys, time
import slowlearn.data.cache as cache
from slowlearn.data.images import image_folder

def save_then_hang(obj, path):  # a cache write that is killed halfway
    with open(path, "wb") as f:
        f.write(bytes(1 << 20))
    print("writing", flush=True)
    time.sleep(60)

cache.torch.save = save_then_hang
image_folder(sys.argv[1], bs=4, device="cpu", verbose=False)
"""


def start_python(code, *args, env):
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_cache_write_killed_halfway_leaves_nothing_after_the_next_load(tmp_path, data_folder):
    """Issue 23, rule 7: SIGKILL during the cache write left a dataset-sized .tmp, forever, one per kill."""
    root = make_folder(tmp_path / "pets")
    env = {**os.environ, "SLOWLEARN_DATA": str(data_folder), "PYTHONPATH": os.pathsep.join(sys.path)}
    for _ in range(2):
        writer = start_python(KILLED_WRITER, root, env=env)
        try:
            assert writer.stdout.readline() == "writing\n", writer.stderr.read()
        finally:
            writer.kill()
            writer.wait(timeout=60)
    cache = data_folder / "image-cache"
    assert len(list(cache.glob("*.tmp"))) == 1  # the second killed write removed the first one's leftover
    load_once = "import sys; from slowlearn.data.images import image_folder; image_folder(sys.argv[1], verbose=False)"
    next_load = subprocess.run([sys.executable, "-c", load_once, str(root)], env=env, capture_output=True, text=True,
                               timeout=120, check=False)
    assert next_load.returncode == 0, next_load.stderr
    assert [p.suffix for p in cache.iterdir()] == [".pt"]  # the cache, and no leftover


def test_a_partial_file_being_written_is_kept_and_other_files_are_never_touched(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    busy, dead, foreign = folder / "partial-abc-1.tmp", folder / "partial-abc-2.tmp", folder / "notes.tmp"
    for path in (busy, dead, foreign):
        path.write_bytes(b"x")
        os.utime(path, (1, 1))  # long before this process started
    with open(busy, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a live writer holds its file
        assert remove_stale_partials(folder) == [dead]
    assert busy.exists() and foreign.exists()
    assert remove_stale_partials(folder) == [busy]  # once its writer is gone
    new = folder / "partial-abc-3.tmp"
    new.write_bytes(b"x")  # just created, not locked yet: left to its writer
    assert remove_stale_partials(folder) == [] and new.exists()


def test_a_cache_written_under_another_split_rule_is_never_served_for_this_one(tmp_path, decodes, monkeypatch):
    """Issue 23, rule 1: the split rule changed (a hash per file instead of a random permutation). The cache holds
    pixels in listing order, independent of the split, and a subset's cache is checked against its exact files,
    so an old rule's cache can only be served where it holds the same images."""
    root = make_folder(tmp_path / "pets", n_per_class=6, splits=("",))
    fresh = load(root, valid_pct=0.5, n_train=4, cache_dir=tmp_path / "fresh")
    with monkeypatch.context() as m:  # an older rule: other images in the subset
        m.setattr(slowlearn.data.labels, "split_fraction", lambda key, seed: 0.9 if key.endswith(("0.png", "1.png"))
                  else 0.1)
        load(root, valid_pct=0.5, n_train=4)
    assert len(decodes) == 2
    again = load(root, valid_pct=0.5, n_train=4)
    assert len(decodes) == 3 and torch.equal(again.train.x, fresh.train.x) and torch.equal(again.valid.x, fresh.valid.x)
