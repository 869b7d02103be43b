"""A small but complete run (BatchNorm, dropout, momentum, one-cycle, shuffled loader, logging) used by the
resume tests, in the test process and in a fresh one: `python tests/resume_run.py CKPT OUT N_EPOCHS`."""
import sys
from pathlib import Path

import torch
from torch import nn
from torch.optim import lr_scheduler

sys.path.insert(0, str(Path(__file__).parent))
from conftest import make_dls  # noqa: E402

from slowlearn import BatchSchedulerCB, CSVLoggerCB, Learner, MetricsCB, MomentumSGD, RecorderCB, set_seed  # noqa: E402

N_BATCHES = 8


def make_learner(log_path):
    model = nn.Sequential(nn.Linear(3, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    dls = make_dls(n_train=8 * N_BATCHES, n_valid=16, bs=8, seed=0, unseeded=True)  # the default loaders' kind
    schedule = BatchSchedulerCB(lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=4 * N_BATCHES)
    cbs = [MetricsCB(), RecorderCB(), schedule, CSVLoggerCB(log_path)]
    return Learner(model, dls, lr=0.1, cbs=cbs, opt_func=lambda p, lr: MomentumSGD(p, lr, mom=0.9))


def weights(learn):
    return torch.cat([v.flatten().float() for v in learn.model.state_dict().values()])


if __name__ == "__main__":
    checkpoint, out, n_epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    set_seed(12345)  # a different seed: everything must come from the checkpoint
    learn = make_learner(Path(out).with_suffix(".csv"))
    learn.fit(n_epochs, resume=checkpoint)
    torch.save({"weights": weights(learn), "lrs": learn.recorder.recs["lr"], "history": learn.history}, out)
