"""File-backed loading (`image_folder(..., in_memory=False)`): its peak memory against in-memory loading, its
speed against torchvision, and the time a killed 2-process run loses to its restart.

The images: CIFAR-10 as JPEGs (../shared/data/cifar10-jpg-{train,test}.zip; 5/6 of each set from train/, 1/6
from test/), unpacked into a temporary folder first, untimed.

- memory: for each of `--sizes` images, a fresh process loads them (`image_folder`, first decode into an empty
  cache for in-memory) and runs one training epoch; its peak RSS (ru_maxrss) is reported, and file-backed, its
  largest worker's peak RSS and private memory. In memory, peak RSS grows with the images; file-backed, it should not.
- speed: one pass over `--speed-images` images resized to `--size`, in batches of 256 with 2 worker processes:
  slowlearn's file-backed loader (uint8 batches from its workers, normalised in the main process) against
  torchvision's ImageFolder + DataLoader(num_workers=2) with the same decode and resize (slowlearn's
  `fit_image` as ImageFolder's loader, then PILToTensor), and with torchvision's own Resize + CenterCrop.
  Interleaved rounds (`--repeats`), median images/s, and the ratio to torchvision measured side by side.
- restart: tests/files_run.py (a small CNN, CheckpointCB(every=2), resume="auto") under torchrun with 2
  processes, uninterrupted and with rank 1 SIGKILLed in epoch 1 and `--max_restarts=1`: the difference of
  their wall times is what the restart costs.

    python benchmarks/file_loading.py [--part memory|speed|restart|all] [--sizes 5000 50000] [--speed-images 20000]
    python benchmarks/file_loading.py --sizes 200 --speed-images 300 --repeats 1 --restart-per-class 34  # a check
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "data"
BS, WORKERS = 256, 2


def unpack(folder: Path, n: int) -> Path:
    """`n` CIFAR-10 JPEGs in `folder/cifar10/{train,test}/<class>/` (5/6 from the training set)."""
    for name, count in (("cifar10-jpg-train.zip", n - n // 6), ("cifar10-jpg-test.zip", n // 6)):
        with zipfile.ZipFile(SHARED / name) as z:
            members = sorted(m for m in z.namelist() if m.endswith(".jpg"))
            z.extractall(folder, [members[i * len(members) // count] for i in range(count)])  # every class
    return folder / "cifar10"


def worker_private_mb() -> float:
    """The largest private memory (pages no other process shares: what a worker adds) of this process's
    children, in MB, now (0 without /proc)."""
    pids = []
    for task in Path("/proc/self/task").glob("*"):
        pids += (task / "children").read_text().split() if (task / "children").exists() else []
    sizes = [0]
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:  # ended meanwhile
            continue
        sizes.append(sum(int(line.split()[1]) for line in rollup if line.startswith(("Private_Clean", "Private_Dirty"))))
    return max(sizes) / 1024


def child_memory(root: str, mode: str, cache: str) -> None:
    """In a fresh process: load, one training epoch, then print the peak RSS in MB: this process's, its largest
    worker's, and that worker's largest private memory (sampled every 10 batches)."""
    from slowlearn.data.images import image_folder
    dls = image_folder(root, bs=BS, device="cpu", verbose=False, cache_dir=cache, in_memory=mode == "in memory",
                       **({} if mode == "in memory" else {"num_workers": WORKERS}))
    private = 0.0
    for i, _ in enumerate(dls.train):
        private = max(private, worker_private_mb()) if i % 10 == 0 else private
    print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                      "worker_private_mb": private}))


def memory(tmp: Path, sizes: list[int]) -> None:
    print(f"peak RSS of a process that loads N images and runs one epoch (batches of {BS}; file-backed: "
          f"{WORKERS} workers: the largest one's peak RSS, which counts the pages it shares with the main process "
          f"it was forked from, and its private memory, what it adds)")
    print(f"{'images':>8} {'in memory':>12} {'file-backed':>12} {'worker RSS':>12} {'private':>10}")
    for n in sizes:
        root = unpack(tmp / f"memory-{n}", n)
        peaks = {}
        for mode in ("in memory", "file-backed"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, str(root), str(tmp / f"cache-{n}")],
                                 capture_output=True, text=True, check=True).stdout
            peaks[mode] = json.loads(out.strip().splitlines()[-1])
        files = peaks["file-backed"]
        print(f"{n:>8} {peaks['in memory']['peak_mb']:>9.0f} MB {files['peak_mb']:>9.0f} MB "
              f"{files['worker_mb']:>9.0f} MB {files['worker_private_mb']:>7.0f} MB")


def speed(tmp: Path, n: int, size: int, repeats: int) -> None:
    import torch
    from PIL import Image
    from torch.utils.data import ConcatDataset, DataLoader
    from torchvision import datasets, transforms

    from slowlearn.data import fit_image
    from slowlearn.data.images import image_folder

    root = unpack(tmp / "speed", n)

    def fit_loader(path):
        with Image.open(path) as image:
            return fit_image(image, "RGB", (size, size))

    def torchvision_pass(same_decode: bool) -> int:
        tfm = [] if same_decode else [transforms.Resize(size), transforms.CenterCrop(size)]
        tfm = transforms.Compose([*tfm, transforms.PILToTensor()])
        kwargs = {"loader": fit_loader} if same_decode else {}
        ds = ConcatDataset([datasets.ImageFolder(str(root / s), transform=tfm, **kwargs) for s in ("train", "test")])
        return sum(len(yb) for _, yb in DataLoader(ds, batch_size=BS, num_workers=WORKERS))

    dls = image_folder(root, size=size, bs=BS, device="cpu", verbose=False, aug="none", in_memory=False,
                       num_workers=WORKERS)

    def slowlearn_pass() -> int:  # every image once: the training and the validation loader
        return sum(len(yb) for loader in (dls.train, dls.valid) for _, yb in loader)

    candidates = {"torchvision, same decode": lambda: torchvision_pass(True),
                  "torchvision Resize+Crop": lambda: torchvision_pass(False),
                  "slowlearn file-backed": slowlearn_pass}
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            assert run() == n
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["torchvision, same decode"])
    print(f"{n} JPEGs resized to {size}x{size}, batches of {BS}, {WORKERS} workers, median of {repeats} round(s); "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'candidate':26} {'seconds':>8} {'images/s':>10} {'x torchvision (same decode)':>28}")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:26} {t:8.2f} {n / t:10,.0f} {base / t:28.2f}")


def restart(tmp: Path, per_class: int) -> None:
    sys.path.insert(0, str(HERE.parent / "tests"))
    import files_run
    from images import make_folder
    root = make_folder(tmp / "restart" / "pets", n_per_class=per_class, size=32, splits=("train", "valid"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    batches = -(-3 * per_class // files_run.GLOBAL_BS)  # per epoch, on each rank
    seconds = {}
    for name, extra in (("uninterrupted", []),
                        ("rank 1 killed in epoch 1", ["--kill", f"1.{batches // 2}", "--rank", "1"])):
        out = tmp / "restart" / name.replace(" ", "-")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   "--max_restarts=1", str(HERE.parent / "tests" / "files_run.py"), str(root), str(out),
                   "--workers", "2", *extra]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        seconds[name] = time.perf_counter() - start
    print(f"2 processes under torchrun, {files_run.EPOCHS} epochs of {3 * per_class} images (32x32 PNGs, "
          f"{batches} batches per epoch), file-backed with 2 workers each; the kill after batch {batches // 2}")
    for name, s in seconds.items():
        print(f"{name:26} {s:8.1f} s")
    print(f"{'lost to the restart':26} {seconds['rank 1 killed in epoch 1'] - seconds['uninterrupted']:8.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("memory", "speed", "restart", "all"), default="all")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000], help="images for the memory part")
    parser.add_argument("--speed-images", type=int, default=20000)
    parser.add_argument("--size", type=int, default=24, help="the speed part's resize (default: 24)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--restart-per-class", type=int, default=340, help="training images per class (3 classes)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_memory(args.child[1], args.child[0], args.child[2])
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("memory", "all"):
            memory(Path(tmp), args.sizes)
        if args.part in ("speed", "all"):
            speed(Path(tmp), args.speed_images, args.size, args.repeats)
        if args.part in ("restart", "all"):
            restart(Path(tmp), args.restart_per_class)


if __name__ == "__main__":
    main()
