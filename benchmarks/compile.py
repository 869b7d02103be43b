"""CompileCB: compile time and training step time with and without torch.compile, side by side in one process.

For the seed CNN, `resnet()` (Fashion-MNIST shapes, batches of 512) and the speed recipes' nets (`speed_net` as
the Fashion-MNIST and CIFAR-10 recipes build it, batches of 512 and 500): a Learner trains `--steps` + 1 batches
of random images on the default device, eagerly and under `CompileCB(backend, mode)`, from the same weights. The
first compiled step holds the compile (forward and backward graphs); the step time is the median of the other
steps (synchronised on a GPU). The table gives both step times, the speed-up, the first step's seconds and the
steps it takes to win the compile time back (none where compiling is slower).

    python benchmarks/compile.py [--steps 20] [--models seed_cnn,resnet,fashion_recipe,cifar_recipe]
                                 [--backend inductor] [--mode default] [--bf16] [--smoke]

`--smoke` runs tiny and quick (batches of 16, 3 steps, the seed CNN and the Fashion-MNIST recipe net, the aot_eager
backend unless `--backend` says otherwise): it checks that the script runs, not how fast compiling is.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
import time
import warnings

import torch

from slowlearn import (
    Callback,
    CompileCB,
    DataLoaders,
    DeviceCB,
    Learner,
    MixedPrecisionCB,
    TensorLoader,
    default_device,
    get_kaiming_initialized_model,
    resnet,
    set_seed,
)
from slowlearn.display import format_table
from slowlearn.models.speednet import speed_net
from slowlearn.recipes import CIFAR10, FASHION_MNIST

MODELS = {"seed_cnn": (get_kaiming_initialized_model, (1, 28, 28), 512),
          "resnet": (resnet, (1, 28, 28), 512),
          "fashion_recipe": (lambda: speed_net(1, FASHION_MNIST.widths, patch=FASHION_MNIST.whiten_patch), (1, 28, 28),
                             FASHION_MNIST.bs),
          "cifar_recipe": (lambda: speed_net(3, CIFAR10.widths, patch=CIFAR10.whiten_patch), (3, 32, 32), CIFAR10.bs)}
SMOKE_MODELS = "seed_cnn,fashion_recipe"


class StepTimer(Callback):
    """Seconds of every training batch (predict, loss, backward, step), the queued GPU work included."""

    order = 100  # last in after_batch, after every other callback's work

    def before_fit(self, learn) -> None:
        self.seconds: list[float] = []

    def before_batch(self, learn) -> None:
        self._sync(learn)
        self.start = time.perf_counter()

    def after_batch(self, learn) -> None:
        self._sync(learn)
        self.seconds.append(time.perf_counter() - self.start)

    @staticmethod
    def _sync(learn) -> None:
        if learn.device is not None and learn.device.type == "cuda":
            torch.cuda.synchronize(learn.device)


def random_images(shape: tuple[int, ...], bs: int, n_batches: int, device) -> DataLoaders:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (bs * n_batches, *shape), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (bs * n_batches,), generator=g)
    train = TensorLoader(x, y, bs, shuffle=True, seed=0, device=device, mean=0.5, std=0.25)
    return DataLoaders(train, TensorLoader(x[:bs], y[:bs], bs, device=device, mean=0.5, std=0.25))


def step_times(make_model, dls, device, cbs) -> list[float]:
    """Seconds of each training step of one epoch of `dls`, from the same initial weights every time."""
    set_seed(0)
    timer = StepTimer()
    learn = Learner(make_model(), dls, lr=1e-3, cbs=[DeviceCB(device), *cbs, timer], opt_func=torch.optim.AdamW)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CompileCB's note on drop_last (these batches are all full)
        learn.fit(1, valid=False)
    return timer.seconds


def compare(name: str, args, device) -> dict:
    make_model, shape, bs = MODELS[name]
    bs = 16 if args.smoke else bs
    dls = random_images(shape, bs, args.steps + 1, device)
    precision = [MixedPrecisionCB("bf16")] if args.bf16 else []
    eager = step_times(make_model, dls, device, precision)
    cb = CompileCB(backend=args.backend, mode=args.mode)
    compiled = step_times(make_model, dls, device, [*precision, cb])
    eager_step, compiled_step = statistics.median(eager[1:]), statistics.median(compiled[1:])
    compile_s = compiled[0] - eager_step  # the first step's time beyond a step's
    saved = eager_step - compiled_step
    break_even = f"{math.ceil(compile_s / saved)}" if saved > 0 else "never"
    return {"model": name, "bs": bs, "eager ms/step": round(eager_step * 1e3, 1),
            "compiled ms/step": round(compiled_step * 1e3, 1), "speed-up": round(eager_step / compiled_step, 2),
            "first step s": round(compiled[0], 1), "steps to break even": break_even, "graphs": cb.compiles}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps after the first (compiling) one")
    parser.add_argument("--models", default=None, help=f"comma-separated, of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--backend", default=None,
                        help="torch.compile backend (default inductor; aot_eager in --smoke)")
    parser.add_argument("--mode", default=None, help="torch.compile mode (default, reduce-overhead, max-autotune)")
    parser.add_argument("--bf16", action="store_true", help="train in bf16 autocast (MixedPrecisionCB)")
    parser.add_argument("--smoke", action="store_true", help="tiny and quick: checks that it runs, times nothing real")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps = min(args.steps, 3)
    args.backend = args.backend or ("aot_eager" if args.smoke else "inductor")
    models = (args.models or (SMOKE_MODELS if args.smoke else ",".join(MODELS))).split(",")
    device = default_device()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{where}; backend {args.backend}, mode {args.mode or 'default'}, {'bf16' if args.bf16 else 'fp32'}, "
          f"{args.steps} timed steps", flush=True)
    rows = []
    for name in models:
        rows.append(compare(name, args, device))
        print(f"{name}: {rows[-1]['speed-up']}x, first step {rows[-1]['first step s']} s", flush=True)
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
