"""The GPU benchmark (`make bench-gpu`) in its CPU smoke mode: every part runs and every check passes."""
import subprocess
import sys
from pathlib import Path

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
