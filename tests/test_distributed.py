"""Two gloo processes on the CPU, launched with torchrun by the tests themselves."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slowlearn import ChannelsLastCB, DistributedCB, Learner, MetricsCB
from slowlearn.checkpoint import read_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from ddp_run import GLOBAL_BS, model, synthetic_dls, torch_loader_dls  # noqa: E402

HERE = Path(__file__).parent


def torchrun(out, *extra, nproc=2, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(HERE / "ddp_run.py"), str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    result = torchrun(out, "--one-cycle")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def single_process_weights():
    learn = Learner(model(), synthetic_dls(GLOBAL_BS), lr=0.1,
                    opt_func=lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9))
    learn.fit_one_cycle(2, 0.1, cbs=[ChannelsLastCB()])
    return [p.detach() for p in learn.model.parameters()]


def test_two_ranks_agree_and_match_one_process(two_process_run):
    out, _ = two_process_run
    rank0, rank1 = (torch.load(out / "results" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(a, b) for a, b in zip(rank0["weights"], rank1["weights"]))
    for a, b in zip(rank0["weights"], single_process_weights()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert rank0["history"] == rank1["history"]  # every rank holds the global metrics
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in rank0["weights"] if w.ndim == 4)


def test_only_rank0_writes_and_reduced_accuracy_is_global(two_process_run):
    out, result = two_process_run
    assert result.stdout.count("accuracy") == 1  # one table, printed by rank 0
    assert sorted(p.name for p in out.iterdir()) == ["ckpt.pt", "log.csv", "results"]
    rank0 = torch.load(out / "results" / "rank0.pt", weights_only=True)
    learn = Learner(model(), synthetic_dls(GLOBAL_BS), cbs=[MetricsCB()])
    learn.model.load_state_dict(read_checkpoint(out / "ckpt.pt")["model"])  # a DDP checkpoint, one process
    preds = learn.get_preds()
    accuracy = (preds.preds.argmax(-1) == preds.targets).float().mean().item()
    assert rank0["history"][-1]["phase"] == "valid"
    assert rank0["history"][-1]["accuracy"] == pytest.approx(accuracy)
    assert len(open(out / "log.csv").readlines()) == 1 + 4


def test_a_failure_on_one_rank_ends_the_run(tmp_path):
    result = torchrun(tmp_path, "--fail-rank", "1", timeout=180)
    assert result.returncode != 0
    assert "deliberate failure on rank 1" in result.stdout + result.stderr


def test_a_single_process_checkpoint_resumes_in_two_processes(tmp_path):
    learn = Learner(model(), synthetic_dls(GLOBAL_BS), lr=0.1, cbs=[MetricsCB()],
                    opt_func=lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9))
    learn.fit(1)
    learn.save(tmp_path / "single.pt")
    result = torchrun(tmp_path / "run", "--resume", str(tmp_path / "single.pt"))
    assert result.returncode == 0, result.stderr[-3000:]
    history = torch.load(tmp_path / "run" / "results" / "rank0.pt", weights_only=True)["history"]
    assert [(r["epoch"], r["phase"]) for r in history] == [(0, "train"), (0, "valid"), (1, "train"), (1, "valid")]


def test_torch_dataloaders_with_a_distributed_sampler_match_one_process(tmp_path):
    result = torchrun(tmp_path, "--torch-loader", "distributed-sampler")
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / "results" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(a, b) for a, b in zip(rank0["weights"], rank1["weights"]))
    learn = Learner(model(), torch_loader_dls(GLOBAL_BS, distributed_sampler=True), lr=0.1, cbs=[DistributedCB()],
                    opt_func=lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9))
    learn.fit(2)  # one process: the same global batches, reshuffled each epoch by set_epoch
    assert learn.dls.train.sampler.epoch == 1
    for a, b in zip(rank0["weights"], learn.model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-5)


def test_a_torch_dataloader_without_a_distributed_sampler_is_an_error(tmp_path):
    result = torchrun(tmp_path, "--torch-loader", "plain", timeout=180)
    assert result.returncode != 0
    assert "without a DistributedSampler, so every process would train on the same batches" in result.stderr


def test_an_unseeded_loader_is_split_between_ranks_without_overlap(tmp_path):
    result = torchrun(tmp_path, "--unseeded")  # each rank's torch RNG differs: they must still share one order
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / "results" / f"rank{r}.pt", weights_only=True)["seen"] for r in (0, 1))
    for epoch in (0, 1):
        items = sorted(round(v, 6) for v in rank0[epoch] + rank1[epoch])
        assert len(items) == 256 and len(set(items)) == 256  # every training item once, on one rank
    assert rank0[0] != rank0[1]  # and a new order each epoch


def test_gradient_accumulation_synchronises_once_per_optimizer_step(tmp_path):
    runs = {}
    for name, extra in (("once per step", []), ("every micro-batch", ["--sync-every-batch"])):
        result = torchrun(tmp_path / name, "--accumulate", "2", *extra)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = torch.load(tmp_path / name / "results" / "rank0.pt", weights_only=True)
    once, every = runs["once per step"], runs["every micro-batch"]
    for a, b in zip(once["weights"], every["weights"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # the same training, up to float rounding
    micro_batches = 2 * len(synthetic_dls(GLOBAL_BS).train)  # 2 epochs of 8 global batches, each rank's half
    assert every["all_reduces"] % micro_batches == 0  # one per gradient bucket and micro-batch
    assert once["all_reduces"] * 2 == every["all_reduces"]  # one per bucket and optimizer step: half as many
def test_ranks_with_different_numbers_of_batches_stop_at_once_with_a_message(tmp_path):
    result = torchrun(tmp_path, "--uneven", timeout=120)  # before: a 300 s gloo timeout naming no cause
    assert result.returncode != 0
    assert ("disagree on what must be the same on all of them (training batches: rank 0 has 8, rank 1 has 10)"
            in result.stderr)
    assert not (tmp_path / "results").exists()  # stopped before training


def test_every_rank_takes_the_same_decisions_on_its_own_data(tmp_path):
    """lr_find sweeps the loss averaged over the ranks (each rank used to sweep its own and suggest its own lr, and
    to stop the sweep on its own divergence while the other waited in an all-reduce); find_batch_size reports the
    same rows on every rank; early stopping stops every rank at the same epoch."""
    result = torchrun(tmp_path, "--decisions", timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / "results" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["losses"] == rank1["losses"] and rank0["suggestion"] == rank1["suggestion"]
    assert rank0["rows"] == rank1["rows"] and [r["bs"] for r in rank0["rows"]] == [16, 64, 1024]
    assert rank0["rows"][-1]["note"] == "larger than the 256 training samples"
    assert rank0["stopped"] == rank1["stopped"] == 1


def test_a_checkpoint_cb_on_rank_0_alone_is_an_error_before_training(tmp_path):
    result = torchrun(tmp_path, "--checkpoint-on-rank0-only", timeout=120)
    assert result.returncode != 0
    assert "CheckpointCBs: rank 0 has 1, rank 1 has 0" in result.stderr and "CheckpointCB goes to every process" \
        in result.stderr
    assert not (tmp_path / "results").exists()


# File-backed loaders under DDP: the fault tests (tests/files_run.py, with CheckpointCB(every=2) and resume="auto").
RESTART_ENV = {"OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}  # pytorch#135712: see cli/launch.py


def files_torchrun(images, out, *extra, launch=("--standalone", "--nproc_per_node=2"), timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", *launch, str(HERE / "files_run.py"), str(images), str(out),
           "--workers", "2", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **RESTART_ENV})


def final_weights(out):
    rank0, rank1 = (torch.load(out / "results" / f"rank{r}.pt", weights_only=True)["weights"] for r in (0, 1))
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1, strict=True))  # the replicas agree
    return rank0


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from images import make_folder
    return make_folder(tmp_path_factory.mktemp("ddp-files") / "pets", n_per_class=34, size=8, splits=("train", "valid"))


@pytest.fixture(scope="module")
def uninterrupted_files_run(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp-files-uninterrupted")
    result = files_torchrun(images, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return final_weights(out)


def test_a_rank_killed_mid_epoch_is_restarted_and_the_run_ends_as_an_uninterrupted_one(images, uninterrupted_files_run,
                                                                                       tmp_path):
    result = files_torchrun(images, tmp_path, "--kill", "1.2", "--rank", "1",
                            launch=("--standalone", "--nproc_per_node=2", "--max_restarts=1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "kill.done").exists() and "resuming from" in result.stdout
    assert "at epoch 1, batch 2" in result.stdout  # the last checkpoint before the kill (every 2 batches)
    assert same_weights(final_weights(tmp_path), uninterrupted_files_run)


def test_two_agents_on_one_machine_agree_with_one_agent_of_two_processes(images, uninterrupted_files_run, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    agents = []
    for host in (1, 0):  # as on two machines: one agent hosts the c10d rendezvous, the other joins it
        launch = ("--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
                  "--rdzv_id=two-agents", f"--rdzv_conf=is_host={host}")
        cmd = [sys.executable, "-m", "torch.distributed.run", *launch, str(HERE / "files_run.py"), str(images),
               str(tmp_path), "--workers", "2"]
        agents.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       env={**os.environ, **RESTART_ENV}))
    try:
        outputs = [agent.communicate(timeout=300) for agent in agents]
    finally:
        for agent in agents:
            agent.kill()
    assert all(agent.returncode == 0 for agent in agents), [err[-2000:] for _, err in outputs]
    assert same_weights(final_weights(tmp_path), uninterrupted_files_run)


def test_sigterm_on_one_rank_stops_every_rank_at_one_step_and_the_run_resumes_exactly(images, uninterrupted_files_run,
                                                                                       tmp_path):
    stopped = files_torchrun(images, tmp_path, "--sigterm", "0.2", "--rank", "1")
    assert stopped.returncode != 0
    # rank 1 is asked during batch 3; every rank learns it one step later, and rank 0 saves there
    assert "SIGTERM received: saved a checkpoint after batch 4 of epoch 0" in stopped.stdout, stopped.stderr[-3000:]
    assert stopped.stdout.count("SIGTERM received") == 1  # printed by rank 0 alone
    resumed = files_torchrun(images, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at epoch 0, batch 4" in resumed.stdout
    assert same_weights(final_weights(tmp_path), uninterrupted_files_run)


def test_the_process_group_started_for_a_run_is_destroyed_at_exit(monkeypatch):
    from slowlearn import distributed
    calls, at_exit = [], []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: bool(calls) and "destroy" not in calls)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda *args, **kwargs: calls.append("init"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    monkeypatch.setattr(distributed.atexit, "register", at_exit.append)
    assert distributed.init_distributed("gloo")
    for handler in at_exit:
        handler()
    assert calls == ["init", "destroy"]


def test_a_mean_over_ranks_without_a_process_group_is_the_value_itself(monkeypatch):
    """WORLD_SIZE set (by torchrun) but no process group started: there is nothing to average over; the mean
    used to divide by WORLD_SIZE all the same (lr_find's losses came out halved)."""
    from slowlearn.distributed import all_reduce_mean
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert all_reduce_mean(torch.tensor([3.])).item() == 3.


def test_sync_bn_on_the_cpu_is_refused_before_the_model_is_changed(monkeypatch):
    """DistributedDataParallel refuses SyncBatchNorm on the CPU ("only work with GPU modules"), after DistributedCB had
    converted the user's BatchNorm layers in place: the model was left with SyncBatchNorm layers."""
    from slowlearn.callbacks import distributed
    monkeypatch.setattr(distributed, "init_distributed", lambda backend: True)
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: False)
    from slowlearn import seed_cnn
    learn = Learner(seed_cnn(n_classes=4), synthetic_dls(GLOBAL_BS), cbs=[DistributedCB(sync_bn=True)])
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in learn.model.modules())
    with pytest.raises(ValueError, match=r"sync_bn=True\) needs CUDA GPUs .* DistributedCB\(\) without sync_bn"):
        learn.fit(1)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in learn.model.modules())
