"""`import slowlearn` stays cheap: heavy optional modules load only when used; the timing is a benchmark."""
import importlib.util
import statistics
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).parent.parent / "benchmarks" / "import_time.py"


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_import_leaves_heavy_modules_unloaded():
    out = run_python("import sys, slowlearn\n"
                     "print(sorted(m for m in ('torcheval', 'matplotlib', 'torch._dynamo', 'torchvision', 'PIL')"
                     " if m in sys.modules))").stdout
    assert out.strip() == "[]"


def test_import_time_is_within_twice_torchs():
    spec = importlib.util.spec_from_file_location("import_time", BENCHMARK)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    times = benchmark.measure(3, names=("import torch", "import slowlearn"))
    ratio = statistics.median(times["import slowlearn"]) / statistics.median(times["import torch"])
    assert ratio <= 2, f"import slowlearn takes {ratio:.2f} x import torch (benchmarks/import_time.py)"
