"""Per-step training time under each precision and memory layout, side by side in one process.

For the seed CNN, `resnet()` (Fashion-MNIST batches of 512) and the CIFAR-10 recipe's `speed_net`
(batches of 500): one AdamW step (forward, loss, backward, step) in fp32 and in bf16 autocast, each
in contiguous (NCHW) and channels-last layout, interleaved so machine noise hits all alike; then what
`precision="auto"` picks on this machine and its speed-up over fp32.

    python benchmarks/precision.py [--repeats 3] [--steps 2] [--models seed_cnn,resnet,speed_net]
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from common import interleaved

from slowlearn import get_kaiming_initialized_model, resnet
from slowlearn.hardware import speed_settings
from slowlearn.models.speednet import speed_net

MODELS = {"seed_cnn": (get_kaiming_initialized_model, (512, 1, 28, 28)),
          "resnet": (resnet, (512, 1, 28, 28)),
          "speed_net": (speed_net, (500, 3, 32, 32))}


def steps(make_model, shape, bf16: bool, channels_last: bool, n: int):
    def setup():
        torch.manual_seed(0)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = make_model().to(memory_format=fmt)
        x, y = torch.randn(shape).contiguous(memory_format=fmt), torch.randint(0, 10, (shape[0],))
        opt = torch.optim.AdamW(model.parameters(), 1e-3, foreach=True)

        def run():
            for _ in range(n):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = F.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        return run
    return setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
    for name in args.models.split(","):
        make_model, shape = MODELS[name]
        configs = {f"{p} {layout}": steps(make_model, shape, p == "bf16", layout == "channels-last", args.steps)
                   for p in ("fp32", "bf16") for layout in ("NCHW", "channels-last")}
        times = interleaved(configs, args.repeats)
        per_step = {k: statistics.median(v) / args.steps for k, v in times.items()}
        auto = speed_settings(make_model(), torch.device("cpu"), verbose=False)
        chosen = f"{'bf16' if auto.precision == 'bf16' else 'fp32'} {'channels-last' if auto.channels_last else 'NCHW'}"
        base = per_step["fp32 NCHW"]
        print(f"{name}: " + ", ".join(f"{k} {v * 1e3:.0f} ms/step ({base / v:.2f}x)" for k, v in per_step.items()))
        print(f"{name}: auto picks {chosen}: {base / per_step[chosen]:.2f}x the fp32 speed per step", flush=True)


if __name__ == "__main__":
    main()
