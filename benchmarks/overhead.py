"""Framework overhead: a plain PyTorch loop vs a bare Learner vs a Learner with the default callbacks.

Same model, same initial weights, same batches (loaders with the same seed), one epoch of training
and one validation pass per run; the three are interleaved and repeated, and reported as ratios
to the plain loop. Targets: bare <= 1.02 x, default callbacks <= 1.05 x the plain loop.
A second part measures the per-step cost on a trivial model (target: <= 20 us per step with the default
callbacks). The default callbacks plus a TensorBoardCB, or an MLflowCB (into a SQLite store in a temporary
folder), each logging every 50 steps, show what a logger adds. MLflowCB's cost is split into what it costs per
step (the slope between a run of --trivial-steps and one of half of them) and what it costs once per fit (creating
the run, its parameters, the final sending and closing); it sends its points every 30 s, which these short runs
never reach (one request of about 20 ms: well under 0.1 %). Without mlflow installed its rows are left out.

`--clock thread` times the trivial model's runs in this thread's CPU time instead of wall time: they run on one
thread, so it counts the same work but not the time other processes hold the core, the main noise on a shared
machine (MLflowCB's background sending is then left out; these runs never reach it). The trivial model's rounds run
the candidates in a new random order each, and each candidate's overhead is also given paired: each run's ratio to
the plain loop's run of the same round (a drift of the machine's speed moves both alike), the median ratio - 1 times
the plain loop's median step, with a bootstrap 95 % interval. On a shared 2-core machine the plain step moves by
10-30 % between runs, more than the overhead: take 100 repeats or more to bound the overhead within ~10 us.

    python benchmarks/overhead.py [--repeats 5] [--trivial-steps 3000] [--trivial-only] [--trivial-threads 1]
                                  [--clock wall|thread]
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from common import interleaved, paired_ratio, report
from torch import nn
from torcheval.metrics import MulticlassAccuracy

from slowlearn import (
    DataLoaders,
    DeviceCB,
    Learner,
    MetricsCB,
    MLflowCB,
    ProgressCB,
    TensorBoardCB,
    TensorLoader,
    default_device,
    fashion_mnist,
    get_kaiming_initialized_model,
)

LR = 0.1
HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
MLFLOW_STORE = f"sqlite:///{tempfile.mkdtemp(prefix='overhead-mlflow-')}/mlflow.db"  # made by the untimed warm-up


def plain_loop(model: nn.Module, dls: DataLoaders, train: bool = True, valid: bool = True, opt=None,
               sched=None) -> float | None:
    """What a hand-written loop does: train one epoch (SGD unless `opt` is given; `sched` stepped per
    batch), then loss and accuracy on the validation set. Returns the accuracy."""
    opt = opt if opt is not None else torch.optim.SGD(model.parameters(), LR)
    if train:
        model.train()
        for xb, yb in dls.train:
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad()
            if sched is not None:
                sched.step()
    if valid:
        model.eval()
        loss_sum, correct = 0., 0
        with torch.no_grad():
            for xb, yb in dls.valid:
                preds = model(xb)
                loss_sum += F.cross_entropy(preds, yb, reduction="sum")
                correct += (preds.argmax(1) == yb).sum()
        n = dls.valid.n_items
        print(f"plain loop: valid loss {float(loss_sum) / n:.3f}, accuracy {int(correct) / n:.4f}")
        return int(correct) / n


def fresh_loaders(base: DataLoaders) -> DataLoaders:
    """New loaders over the same tensors, with the same seed: every run sees the same batches."""
    def like(dl: TensorLoader, shuffle: bool) -> TensorLoader:
        new = TensorLoader(dl.x, dl.y, dl.bs, shuffle=shuffle, device=dl.device, seed=0)
        new.scale, new.shift = dl.scale, dl.shift
        return new
    return DataLoaders(like(base.train, True), like(base.valid, False))


def candidates(make_model, base: DataLoaders, device, train=True, valid=True):
    def model():
        torch.manual_seed(0)
        return make_model().to(device)

    def learner(cbs):
        def setup():
            learn = Learner(model(), fresh_loaders(base), F.cross_entropy, lr=LR, cbs=cbs())
            return lambda: learn.fit(1, train=train, valid=valid)
        return setup

    def plain():
        m, dls = model(), fresh_loaders(base)
        return lambda: plain_loop(m, dls, train, valid)

    default = lambda: [DeviceCB(device), MetricsCB(accuracy=MulticlassAccuracy()), ProgressCB()]
    tensorboard = lambda: [*default(), TensorBoardCB(tempfile.mkdtemp(prefix="overhead-tb-"))]
    mlflow = lambda: [*default(), MLflowCB(MLFLOW_STORE, experiment="overhead")]
    found = {"plain loop": plain, "bare Learner": learner(list), "Learner + default cbs": learner(default),
             "default cbs + TensorBoard": learner(tensorboard)}
    return found | {"default cbs + MLflow": learner(mlflow)} if HAS_MLFLOW else found


def check_same_trajectory(make_model, base, device) -> None:
    torch.manual_seed(0)
    a = make_model().to(device)
    b = make_model().to(device)
    b.load_state_dict(a.state_dict())
    plain_loop(a, fresh_loaders(base), valid=False)
    Learner(b, fresh_loaders(base), F.cross_entropy, lr=LR).fit(1, valid=False)
    same = all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    print(f"plain loop and bare Learner end with {'bitwise identical' if same else 'DIFFERENT'} weights")


def trivial_dls(n: int, device) -> DataLoaders:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 10, generator=g), torch.randint(0, 2, (n,), generator=g)
    return DataLoaders(TensorLoader(x, y, 32, shuffle=True, device=device, seed=0),
                       TensorLoader(x[:32], y[:32], 32, device=device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trivial-steps", type=int, default=3000)
    parser.add_argument("--trivial-only", action="store_true", help="skip the seed CNN on Fashion-MNIST")
    parser.add_argument("--trivial-threads", type=int, default=1,
                        help="torch threads for the trivial model (one: on a shared 2-core machine, handing its tiny "
                             "ops between two threads costs and varies more than the framework itself)")
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall",
                        help="what times the trivial model's runs: wall time, or this thread's CPU time")
    args = parser.parse_args()
    args.clock_fn = time.thread_time if args.clock == "thread" else time.perf_counter
    device = default_device()
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")

    if not args.trivial_only:
        base = fashion_mnist(bs=512, device=device)
        check_same_trajectory(get_kaiming_initialized_model, base, device)
        times = interleaved(candidates(get_kaiming_initialized_model, base, device), args.repeats)
        print(f"\nSeed CNN on Fashion-MNIST, 1 epoch (train + valid), {args.repeats} interleaved repeats:")
        report(times, "plain loop")

    torch.set_num_threads(args.trivial_threads)  # the trivial model's ops are too small to share between threads
    tiny = trivial_dls(args.trivial_steps * 32, device)
    times = interleaved(candidates(lambda: nn.Linear(10, 2), tiny, device, valid=False), args.repeats, args.clock_fn,
                        shuffle=True)
    print(f"\nTrivial model (Linear(10, 2), bs 32), {args.trivial_steps} training steps per run, "
          f"{args.trivial_threads} torch thread(s), {args.clock} clock:")
    report(times, "plain loop")
    plain_step = statistics.median(times["plain loop"]) / args.trivial_steps * 1e6
    for name in ("bare Learner", "Learner + default cbs", "default cbs + TensorBoard"):
        extra, fastest = ((pick(times[name]) - pick(times["plain loop"])) / args.trivial_steps * 1e6
                          for pick in (statistics.median, min))
        ratio, low, high = paired_ratio(times[name], times["plain loop"])
        print(f"{name}: {extra:.1f} us per step over the plain loop (medians; from the fastest runs {fastest:.1f}; "
              f"paired by round {ratio * plain_step:.1f}, 95 % interval {low * plain_step:.1f} to "
              f"{high * plain_step:.1f})")
    logger = (statistics.median(times["default cbs + TensorBoard"]) - statistics.median(times["Learner + default cbs"]))
    print(f"TensorBoardCB: {logger / args.trivial_steps * 1e6:.1f} us per step over the default callbacks")
    if HAS_MLFLOW:
        mlflow_cost(times, args, device)


def mlflow_cost(times: dict[str, list[float]], args, device) -> None:
    """MLflowCB over the default callbacks: per step (the slope from a run half as long) and per fit. Both runs
    log every 50 steps as long as the short one has 500 steps (--trivial-steps 1000 or more): MLflowCB logs more
    often in epochs of fewer than 10 x 50 steps."""
    pair = ("Learner + default cbs", "default cbs + MLflow")
    few = max(1, args.trivial_steps // 2)
    runs = candidates(lambda: nn.Linear(10, 2), trivial_dls(few * 32, device), device, valid=False)
    short = interleaved({name: setup for name, setup in runs.items() if name in pair}, args.repeats, args.clock_fn)
    extra_long, extra_short = (statistics.median(t[pair[1]]) - statistics.median(t[pair[0]]) for t in (times, short))
    per_step = (extra_long - extra_short) / (args.trivial_steps - few)
    per_fit = extra_short - per_step * few
    print(f"MLflowCB: {per_step * 1e6:.1f} us per step over the default callbacks, plus {per_fit * 1e3:.0f} ms per "
          f"fit (creating the run, its parameters, the final sending and closing); "
          f"{extra_long / args.trivial_steps * 1e6:.1f} us per step all in, over {args.trivial_steps} steps")


if __name__ == "__main__":
    main()
