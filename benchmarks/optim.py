"""Optimizer step time: slowlearn's optimizers vs torch.optim's foreach path vs its per-parameter loop.

Model: torchvision's resnet18 (11.7 M parameters in 62 tensors) with fixed random gradients. Each
optimizer steps `--steps` times per round; rounds are interleaved across the three implementations
and the median step time is reported, with the ratios the targets use: ours / torch foreach
(target <= 1.1) and per-parameter loop / ours (target >= 3).

The last column bounds what any implementation could gain over the loop on this machine. An
update that reads and writes each tensor once (a perfectly fused kernel) moves `ACCESSES` tensors
of parameter size per step: Adam reads p, g, m, v and writes p, m, v, so 7. The floor is the time
of the simplest such update, `p += g` (3 accesses, one foreach op), scaled to that count; where the
loop is less than 3x the floor, no implementation can be 3x faster than the loop here.

On a CPU with glibc, a foreach op's outputs (all parameter-sized temporaries at once) are large
enough to be mapped from the OS and returned after every step, so each step pays page faults that
the loop, freeing one small temporary at a time, does not. To see the bandwidth-bound times, run
with `MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000`.

    python benchmarks/optim.py [--steps 20] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics

import torch
from common import interleaved
from torchvision.models import resnet18

from slowlearn import optim
from slowlearn.device import default_device

PAIRS = {  # name: (ours, torch's class, torch kwargs)
    "SGD": (lambda p: optim.SGD(p, 0.1, wd=1e-4), torch.optim.SGD, dict(lr=0.1, weight_decay=1e-4)),
    "MomentumSGD": (lambda p: optim.MomentumSGD(p, 0.1, dampening=0.), torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    "RMSProp": (lambda p: optim.RMSProp(p, 1e-3), torch.optim.RMSprop, dict(lr=1e-3)),
    "AdaGrad": (lambda p: optim.AdaGrad(p, 1e-2), torch.optim.Adagrad, dict(lr=1e-2)),
    "AdaDelta": (lambda p: optim.AdaDelta(p), torch.optim.Adadelta, dict()),
    "Adam": (lambda p: optim.Adam(p, 1e-3), torch.optim.Adam, dict(lr=1e-3)),
    "AdamW": (lambda p: optim.AdamW(p, 1e-3), torch.optim.AdamW, dict(lr=1e-3)),
}


ACCESSES = {"SGD": 3, "MomentumSGD": 5, "RMSProp": 5, "AdaGrad": 5, "AdaDelta": 7, "Adam": 7, "AdamW": 7}


def bandwidth_floor(params, steps, device, repeats) -> float:
    """Seconds per step of `p += g` over all parameters: 3 tensor accesses per element."""
    tensors, grads = [p.detach().clone() for p in params], [p.grad for p in params]

    def setup():
        def run():
            for _ in range(steps):
                torch._foreach_add_(tensors, grads)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return run
    return statistics.median(interleaved({"add": setup}, repeats)["add"]) / steps


def stepper(make_opt, params, steps, device):
    def setup():
        opt = make_opt(params)
        opt.step()  # create the state outside the timed steps

        def run():
            for _ in range(steps):
                opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return run
    return setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = default_device()
    torch.manual_seed(0)
    params = [p for p in resnet18().to(device).parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    n = sum(p.numel() for p in params)
    print(f"resnet18 on {device}: {n / 1e6:.1f} M parameters in {len(params)} tensors, "
          f"{args.steps} steps x {args.repeats} interleaved rounds, torch {torch.__version__}")
    floor_ms = bandwidth_floor(params, args.steps, device, args.repeats) * 1e3 / 3  # per tensor access
    print(f"memory floor: {floor_ms:.2f} ms per parameter-sized tensor read or written")
    print(f"{'optimizer':12} {'ours ms':>9} {'foreach ms':>11} {'loop ms':>9} {'ours/foreach':>13} {'loop/ours':>10}"
          f" {'loop/floor':>11}")
    for name, (ours, torch_cls, kwargs) in PAIRS.items():
        times = interleaved({
            "ours": stepper(ours, params, args.steps, device),
            "foreach": stepper(lambda p: torch_cls(p, foreach=True, **kwargs), params, args.steps, device),
            "loop": stepper(lambda p: torch_cls(p, foreach=False, **kwargs), params, args.steps, device),
        }, args.repeats)
        ms = {k: statistics.median(v) / args.steps * 1e3 for k, v in times.items()}
        print(f"{name:12} {ms['ours']:9.2f} {ms['foreach']:11.2f} {ms['loop']:9.2f} "
              f"{ms['ours'] / ms['foreach']:13.3f} {ms['loop'] / ms['ours']:10.2f}"
              f" {ms['loop'] / (floor_ms * ACCESSES[name]):11.2f}")


if __name__ == "__main__":
    main()
