"""Import time: `import slowlearn` against `import torch`, each in a fresh Python process.

slowlearn needs torch, so the ratio says what slowlearn adds on top (target: <= 1.3 x). The two are
interleaved (torch, slowlearn, torch, ...) so that machine noise hits both alike; the medians of
`--repeats` runs are compared. `slowlearn --help` is timed too: a user waits for it before anything
runs. With `--max-ratio R` the script exits with status 1 when the median ratio exceeds R (the test
suite runs it so, with a generous bound).

    python benchmarks/import_time.py [--repeats 5] [--max-ratio 2]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

STATEMENTS = {
    "import torch": "import torch",
    "import slowlearn": "import slowlearn",
    "slowlearn --help": "import sys; from slowlearn.cli import main; sys.argv = ['slowlearn', '--help']; main()",
}


def seconds(statement: str) -> float:
    """Wall time of a fresh interpreter running `statement` (start-up included, the same for every statement)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(repeats: int, names=tuple(STATEMENTS)) -> dict[str, list[float]]:
    """Seconds of each of `names` (keys of STATEMENTS), `repeats` times, interleaved."""
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            times[name].append(seconds(STATEMENTS[name]))
    return times


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--repeats", type=int, default=5)
    args.add_argument("--max-ratio", type=float, default=None)
    args = args.parse_args()
    times = measure(args.repeats)
    base = statistics.median(times["import torch"])
    print(f"{'':18} {'median':>8} {'min':>8} {'ratio to torch (median)':>24}")
    for name, ts in times.items():
        print(f"{name:18} {statistics.median(ts):>7.2f}s {min(ts):>7.2f}s {statistics.median(ts) / base:>24.2f}")
    ratio = statistics.median(times["import slowlearn"]) / base
    if args.max_ratio is not None and ratio > args.max_ratio:
        print(f"import slowlearn takes {ratio:.2f} x import torch, more than {args.max_ratio} x")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
