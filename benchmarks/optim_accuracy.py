"""Issue 3's accuracy criterion over several seeds: `train(...)` on Fashion-MNIST for 3 epochs at a
constant lr with MomentumSGD (1.25), Adam (1e-2) and RMSProp (1e-2, in torch's form, the seed's form
and with Hinton's alpha of 0.9; and torch.optim.RMSprop itself, for reference). The target is >= 85 %
validation accuracy after the last epoch.

Prints each seed's validation accuracy after every epoch and the training accuracy of the last
epoch, then the mean and range of the final validation accuracy per optimizer.

    python benchmarks/optim_accuracy.py [--seeds 4]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
from functools import partial

import torch

from slowlearn import Adam, MomentumSGD, RMSProp, get_kaiming_initialized_model, set_seed, train

CONFIGS = {  # name: (opt_func, lr)
    "MomentumSGD lr 1.25": (MomentumSGD, 1.25),
    "Adam lr 1e-2": (Adam, 1e-2),
    "RMSProp lr 1e-2 (torch's form)": (RMSProp, 1e-2),
    "torch.optim.RMSprop lr 1e-2": (torch.optim.RMSprop, 1e-2),
    "RMSProp lr 1e-2 (seed: v0=g^2, eps 1e-5)": (partial(RMSProp, v_init="grad", eps=1e-5), 1e-2),
    "RMSProp lr 1e-2 (alpha 0.9)": (partial(RMSProp, alpha=0.9), 1e-2),
}


def accuracies(opt_func, lr: float, seed: int) -> tuple[list[float], float]:
    """Validation accuracy after each epoch, and the last epoch's training accuracy."""
    set_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        learn = train(get_kaiming_initialized_model(), lr=lr, opt_func=opt_func)
    valid = [row["accuracy"] for row in learn.history if row["phase"] == "valid"]
    return valid, [row["accuracy"] for row in learn.history if row["phase"] == "train"][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    summary = {}
    for name, (opt_func, lr) in CONFIGS.items():
        finals = []
        for seed in range(args.seeds):
            valid, train_acc = accuracies(opt_func, lr, seed)
            finals.append(valid[-1])
            print(f"{name:42} seed {seed}: valid {' '.join(f'{a:.3f}' for a in valid)}, train {train_acc:.3f}",
                  flush=True)
        summary[name] = finals
    print(f"\n{'final valid accuracy':42} {'mean':>6} {'min':>6} {'max':>6} {'>= 0.85':>8}")
    for name, finals in summary.items():
        passed = sum(a >= 0.85 for a in finals)
        print(f"{name:42} {statistics.mean(finals):6.3f} {min(finals):6.3f} {max(finals):6.3f} "
              f"{passed:>4}/{len(finals)}")


if __name__ == "__main__":
    main()
