"""`make bench-gpu`: on whatever CUDA GPU is present, in one table: the speed recipes (each against the same
recipe as a plain loop, see speedrun.py), the seed recipe against a plain loop, and correctness checks of the
GPU-only paths (fused AdamW against foreach, bf16 autocast, channels-last, GPU-resident loaders, a 1-process
nccl DistributedCB run, CompileCB with inductor).

Without a GPU it runs the same on the CPU; `--smoke` (used by the test suite) shrinks every part to
a few hundred images and one epoch. Targets for the record, one H100: Fashion-MNIST >= 94.5 % in
<= 10 s, CIFAR-10 (JPEG set) >= 90.5 % in <= 5 s.

    python benchmarks/gpu.py [--smoke] [--seeds 1]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import time
import warnings

import speedrun
import torch
import torch.distributed as dist
from one_cycle import LR, plain_one_cycle
from overhead import fresh_loaders

from slowlearn import (
    ChannelsLastCB,
    CompileCB,
    DistributedCB,
    Learner,
    MixedPrecisionCB,
    default_device,
    fashion_mnist,
    get_kaiming_initialized_model,
    resnet,
    set_seed,
    train_1cycle,
)
from slowlearn.display import format_table
from slowlearn.train import default_cbs


def check(name: str, ok: bool, detail: str) -> dict:
    return {"check": name, "result": "ok" if ok else "FAILED", "detail": detail}


def fused_adamw(device) -> dict:
    """Three AdamW steps with fused kernels and with foreach kernels on the same gradients: same weights."""
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(n, generator=g).to(device) for n in (1000, 10, 1)]
    grads = [[torch.randn(len(p), generator=g).to(device) for p in start] for _ in range(3)]
    results = []
    for kind in ("fused", "foreach"):
        params = [p.clone().requires_grad_() for p in start]
        opt = torch.optim.AdamW(params, 1e-2, weight_decay=0.1, **{kind: True})
        for step_grads in grads:
            for p, grad in zip(params, step_grads):
                p.grad = grad.clone()
            opt.step()
        results.append(params)
    diff = max((a - b).abs().max().item() for a, b in zip(*results))
    return check("fused AdamW = foreach", diff < 1e-6, f"max weight difference {diff:.1e} after 3 steps")


def short_fit(dls, cbs, device, epochs=1) -> Learner:
    set_seed(0)
    learn = Learner(resnet(nfs=(8, 16, 32)), dls, lr=1e-2, cbs=[*default_cbs()[:-1], *cbs],
                    opt_func=torch.optim.AdamW)
    with contextlib.redirect_stdout(io.StringIO()):
        return learn.fit(epochs)


def precision_and_layout(dls, device) -> list[dict]:
    """bf16 autocast and channels-last train to about the fp32, contiguous accuracy, in the right layout."""
    base = short_fit(dls, [], device).history[-1]["accuracy"]
    bf16 = short_fit(dls, [MixedPrecisionCB("bf16")], device).history[-1]["accuracy"]
    learn = short_fit(dls, [ChannelsLastCB()], device)
    conv = learn.model[0].convs[0][0].weight
    layout_ok = conv.is_contiguous(memory_format=torch.channels_last)
    cl = learn.history[-1]["accuracy"]
    return [check("bf16 autocast", abs(bf16 - base) < 0.05, f"accuracy {bf16:.4f} vs fp32 {base:.4f}"),
            check("channels-last", layout_ok and abs(cl - base) < 0.05,
                  f"weights channels-last: {layout_ok}; accuracy {cl:.4f} vs contiguous {base:.4f}")]


def resident_loaders(dls, device) -> dict:
    xb, yb = next(iter(dls.train))
    ok = xb.device.type == device.type and yb.device.type == device.type
    return check("device-resident loaders", ok, f"batches on {xb.device}, data on {dls.train.x.device}")


def one_process_ddp(dls, device) -> dict:
    """DistributedCB in a process group of one (nccl on CUDA, gloo on the CPU): trains, unwraps after."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("SLOWLEARN_BENCH_PORT", "29533"))
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        learn = short_fit(dls, [DistributedCB()], device)
        ok = type(learn.model).__name__ == "Sequential" and learn.history[-1]["accuracy"] > 0
        return check(f"1-process {backend} DistributedCB", ok, f"accuracy {learn.history[-1]['accuracy']:.4f}")
    finally:
        dist.destroy_process_group()


def compiled(dls, device, smoke: bool) -> dict:
    """CompileCB trains the resnet of the checks above to the eager accuracy in two epochs, in two graphs (training,
    then validation: one recompile); the detail has each run's epoch times, the compiled first one holding the
    compile. Inductor, or aot_eager in a CPU smoke run (inductor's CPU compile alone outlasts the smoke run)."""
    backend = "aot_eager" if smoke and device.type == "cpu" else "inductor"
    cb = CompileCB(backend=backend)
    seconds, accuracy = {}, {}
    for name, cbs in (("eager", []), ("compiled", [cb])):
        times = [time.perf_counter()]
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # CompileCB's note on drop_last (these batches are all full)
            learn = short_fit(dls, cbs, device)
            times.append(time.perf_counter())
            learn.fit(1)  # the compiled run reuses its graphs
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())
        seconds[name], accuracy[name] = [b - a for a, b in itertools.pairwise(times)], learn.history[-1]["accuracy"]
    # Two epochs on a smoke run's few hundred images leave accuracy to chance (aot_eager's numerics differ in the last
    # bits, and the runs drift apart): there only the graphs are checked.
    close = smoke or abs(accuracy["compiled"] - accuracy["eager"]) < 0.05
    ok = close and (cb.compiles, cb.recompiles) == (2, 1)
    (first, second), (_, eager) = seconds["compiled"], seconds["eager"]
    return check(f"CompileCB ({backend})", ok,
                 f"{cb.compiles} graphs; epochs {first:.1f} s (compiling) then {second:.2f} s vs eager {eager:.2f} s "
                 f"({eager / second:.2f}x); accuracy {accuracy['compiled']:.4f} vs {accuracy['eager']:.4f}")


def seed_recipe_vs_plain(device, smoke: bool) -> dict:
    """train_1cycle on the seed CNN against the same recipe by hand, same weights and batches."""
    epochs = 1 if smoke else 3
    base = fashion_mnist(bs=512, device=device, **(speedrun.SMOKE if smoke else {}))
    seconds, accs = {}, {}
    for name in ("plain loop", "train_1cycle") * (1 if smoke else 2):  # a first round warms up
        set_seed(0)
        model, dls = get_kaiming_initialized_model().to(device), fresh_loaders(base)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if name == "plain loop":
                accs[name] = plain_one_cycle(model, dls, epochs)
            else:
                accs[name] = train_1cycle(model, lr=LR, n_epochs=epochs, dls=dls).history[-1]["accuracy"]
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds[name] = time.perf_counter() - start
    ratio = seconds["train_1cycle"] / seconds["plain loop"]
    return check("seed recipe: train_1cycle / plain loop", abs(accs["train_1cycle"] - accs["plain loop"]) < 0.01,
                 f"{ratio:.3f}x the time ({epochs} epochs), accuracy {accs['train_1cycle']:.4f} vs "
                 f"{accs['plain loop']:.4f}")


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args(argv)
    device = default_device()
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else device}", flush=True)
    recipe_args = ["--recipe", "all", "--seeds", str(args.seeds), "--baseline-epochs", "0"]
    recipes = speedrun.main(recipe_args + (["--smoke"] if args.smoke else []))
    dls = fashion_mnist(bs=64, device=device, n_train=512, n_valid=256)
    checks = [fused_adamw(device), *precision_and_layout(dls, device), resident_loaders(dls, device),
              one_process_ddp(dls, device), compiled(dls, device, args.smoke), seed_recipe_vs_plain(device, args.smoke)]
    checks += [check(f"{row['run']}", True, f"{row['acc mean']:.4f} mean accuracy in {row['seconds']:.1f} s, "
                     f"{row['x plain']:.3f}x the plain loop; same accuracy {row['same acc']}, bitwise the same "
                     f"weights {row['same weights']} seeds; {row['% prec peak']:.1f} % of the {row['prec']} matmul peak")
               for row in recipes if row["run"].endswith(" recipe")]
    print(format_table(checks))
    return checks


if __name__ == "__main__":
    main()
