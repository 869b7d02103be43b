"""Exported models: export and load time, file size against the checkpoint, and prediction throughput from
PNG files (`Predictor.get_preds`) against `learn.get_preds` on the same images in memory and against a plain
PyTorch loop (Pillow decode + the model), all in one process.

    python benchmarks/export.py [--n 2000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import interleaved, report
from PIL import Image

from slowlearn import DeviceCB, Learner, fashion_mnist, get_kaiming_initialized_model, load_learner, resnet, set_seed


def trained(model, dls) -> Learner:
    return Learner(model, dls, lr=0.05, opt_func=torch.optim.AdamW, cbs=[DeviceCB(device="cpu")]).fit(1)


def plain_loop(model, files: list[Path], mean: float, std: float, bs: int = 256) -> torch.Tensor:
    """What a user would write by hand: decode each PNG with Pillow, normalise, run the model in eval mode."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(files), bs):
            pixels = np.stack([np.asarray(Image.open(f)) for f in files[i:i + bs]])
            xb = (torch.from_numpy(pixels)[:, None].float() / 255 - mean) / std
            out.append(model(xb).softmax(-1))
    return torch.cat(out)


def measure(name: str, learn: Learner, files: list[Path], folder: Path, repeats: int) -> None:
    export, checkpoint = folder / f"{name}.pt2", folder / f"{name}.ckpt"
    start = time.perf_counter()
    learn.export(export)
    export_s = time.perf_counter() - start
    load_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor = load_learner(export, device="cpu")
        load_times.append(time.perf_counter() - start)
    learn.save(checkpoint)
    torch.save(learn.model.state_dict(), folder / "weights.pt")
    size, ckpt_size, weights_size = (p.stat().st_size for p in (export, checkpoint, folder / "weights.pt"))
    print(f"\n{name}: export {export_s:.2f} s, load {statistics.median(load_times):.3f} s (median of {repeats}); "
          f"file {size / 1e6:.3f} MB = {size / ckpt_size:.2f} x the checkpoint ({ckpt_size / 1e6:.3f} MB, with the "
          f"optimizer state) = {size / weights_size:.2f} x the weights alone (torch.save(state_dict))")
    mean, std = learn.dls.valid.mean, learn.dls.valid.std
    times = interleaved({
        "learn.get_preds (memory)": lambda: learn.get_preds,
        "predictor (PNG files)": lambda: lambda: predictor.get_preds(files),
        "plain loop (PNG files)": lambda: lambda: plain_loop(learn.model, files, mean, std),
    }, repeats)
    report(times, "predictor (PNG files)")
    for label, ts in times.items():
        print(f"  {label:26} {len(files) / statistics.median(ts):>10.0f} images/s")
    got, expected = predictor.get_preds(files).preds, learn.get_preds().preds[:len(files)]
    print(f"  same argmax: {bool(torch.equal(got.argmax(-1), expected.argmax(-1)))}, "
          f"max |prob difference| {float((got - expected).abs().max()):.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="validation images written as PNG files")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    set_seed(0)
    dls = fashion_mnist(bs=256, n_train=4096, n_valid=args.n, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = []
        for i, image in enumerate(dls.valid.x):
            files.append(folder / "png" / f"{i:05d}.png")
            files[-1].parent.mkdir(exist_ok=True)
            Image.fromarray(image[0].numpy()).save(files[-1])
        print(f"{torch.__version__}, {torch.get_num_threads()} threads, {len(files)} Fashion-MNIST PNG files")
        measure("seed CNN", trained(get_kaiming_initialized_model(), dls), files, folder, args.repeats)
        measure("resnet", trained(resnet(in_channels=1), dls), files, folder, args.repeats)


if __name__ == "__main__":
    main()
