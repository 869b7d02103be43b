"""The benchmarks: the GPU benchmark (`make bench-gpu`) in its CPU smoke mode runs every part and passes every check;
the timing helpers pair runs by round."""
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_bench_gpu_smoke_runs_every_part_and_passes_its_checks(fashion_folder):
    result = subprocess.run([sys.executable, "gpu.py", "--smoke"], cwd=BENCHMARKS, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout[result.stdout.index("check"):]
    for name in ("fused AdamW = foreach", "bf16 autocast", "channels-last", "device-resident loaders",
                 "1-process gloo DistributedCB", "CompileCB (aot_eager)", "seed recipe: train_1cycle / plain loop",
                 "fashion_mnist recipe", "cifar10 recipe"):
        assert name in table, table
    assert "FAILED" not in table, table
    assert table.count(" ok ") == 9, table


def test_timings_paired_by_round_follow_a_machine_whose_speed_drifts(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from common import interleaved, paired_ratio

    baseline = [1.0, 2.0, 1.5, 3.0]  # the machine's speed changes from round to round
    ratio, low, high = paired_ratio([1.1 * t for t in baseline], baseline)
    assert (ratio, low, high) == pytest.approx((0.1, 0.1, 0.1))  # 10 % slower in every round
    order = []
    interleaved({name: (lambda name=name: lambda: order.append(name)) for name in "abc"}, 20, shuffle=True)
    rounds = [tuple(order[i:i + 3]) for i in range(3, len(order), 3)]  # after the untimed warm-up of each
    assert len(rounds) == 20 and all(sorted(r) == ["a", "b", "c"] for r in rounds) and len(set(rounds)) > 1
