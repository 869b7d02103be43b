"""Framework overhead per training step in CPU instructions, counted by valgrind's callgrind: a count that
other processes on the machine do not change, unlike wall time (on a shared 2-core machine run-to-run noise is
larger than the overhead itself). Trivial model (Linear(10, 2), batches of 32, one torch thread), one epoch of
training per fit: the plain loop, a bare Learner and a Learner with the default callbacks (DeviceCB, MetricsCB,
ProgressCB), as in overhead.py. Each is counted over a fit of --steps and one of 4x that; the difference over
the extra steps is the per-step count (the per-fit cost cancels), printed against the plain loop's with the
estimate in microseconds at the plain loop's measured time per instruction (a lower bound: paired wall-clock runs
put the framework's instructions at about 1 ns each on the 2-core Xeon, the plain step's at 0.5-0.7).

    python benchmarks/instructions.py [--steps 300] [--repeats 4]   # runs itself under valgrind (apt install valgrind)

Hash seeds are fixed and every candidate is warmed up twice first (torcheval optimises its TorchScript functions in
its second fit). The same run gives the same counts, but a per-step count still moves by 1-3 thousand instructions
with the state of the heap that earlier fits left (how allocations fall, which a change anywhere in the code moves
too): so the pair of fits is repeated `--repeats` times, one after the other in the process, and the median slope
is printed with the range.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAMES = ("plain loop", "bare Learner", "Learner + default cbs")


def trivial_runs(steps: int) -> dict:
    """overhead.py's candidates on the trivial model, `steps` training steps a fit, one torch thread, CPU."""
    import torch
    from torch import nn

    import overhead
    torch.set_num_threads(1)
    device = torch.device("cpu")
    return overhead.candidates(lambda: nn.Linear(10, 2), overhead.trivial_dls(steps * 32, device), device, valid=False)


def count(args) -> None:
    """Under callgrind: instrument only the timed fits (`callgrind_control` toggles it, then dumps the count)."""
    runs = {steps: trivial_runs(steps) for steps in (args.steps, 4 * args.steps)}
    for repeat in range(args.repeats):
        for steps, candidates in runs.items():
            for name in NAMES:
                if repeat == 0:  # two warm-ups, not counted: torcheval optimises its scripted functions in the second
                    candidates[name]()(), candidates[name]()()
                fit = candidates[name]()
                control("-z"), control("-i", "on")
                fit()
                control("-i", "off"), control("-d", f"{name.replace(' ', '_').replace('+', 'and')}@{steps}#{repeat}")


def control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, stdout=subprocess.DEVNULL)


def totals(folder: Path) -> dict[tuple[str, int, int], int]:
    """(candidate, steps, repeat) -> instructions, from the dumps' `callgrind_annotate` totals."""
    found = {}
    for dump in folder.glob("out.*"):
        trigger = re.search(r"^desc: Trigger: dump (\S+)@(\d+)#(\d+)$", dump.read_text(errors="replace"), re.M)
        if trigger is None:
            continue
        annotated = subprocess.run(["callgrind_annotate", str(dump)], capture_output=True, text=True).stdout
        total = next(line for line in annotated.splitlines() if "PROGRAM TOTALS" in line)
        name = trigger.group(1).replace("and", "+").replace("_", " ")
        found[(name, int(trigger.group(2)), int(trigger.group(3)))] = int(total.split()[0].replace(",", ""))
    return found


def plain_step_seconds(steps: int) -> float:
    """The plain loop's wall time per step here (median of 5, outside valgrind)."""
    runs = trivial_runs(steps)
    times = []
    for _ in range(6):
        fit = runs["plain loop"]()
        start = time.perf_counter()
        fit()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=4, help="pairs of fits counted per candidate (median printed)")
    parser.add_argument("--count", action="store_true", help=argparse.SUPPRESS)  # the run under valgrind
    args = parser.parse_args()
    if args.count:
        return count(args)
    if shutil.which("valgrind") is None:  # not an error: `make bench` runs on without this count
        print("instructions.py: valgrind is not installed (apt install valgrind): no instruction counts")
        return
    with tempfile.TemporaryDirectory(prefix="callgrind-") as folder:
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        run_count = [sys.executable, __file__, "--count", "--steps", str(args.steps), "--repeats", str(args.repeats)]
        subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={folder}/out",
                        *run_count], check=True, env=env, cwd=Path(__file__).parent,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        found = totals(Path(folder))
    slopes = {name: [(found[(name, 4 * args.steps, r)] - found[(name, args.steps, r)]) / (3 * args.steps)
                     for r in range(args.repeats)] for name in NAMES}
    per_step = {name: statistics.median(values) for name, values in slopes.items()}
    seconds_per_instruction = plain_step_seconds(2000) / per_step["plain loop"]
    print(f"Instructions per training step (callgrind; slope between fits of {args.steps} and {4 * args.steps} "
          f"steps, median of {args.repeats} pairs [range]), trivial model, 1 torch thread:")
    for name in NAMES:
        extra = per_step[name] - per_step["plain loop"]
        line = f"{name:24} {per_step[name]:>10,.0f} [{min(slopes[name]):,.0f}-{max(slopes[name]):,.0f}]"
        if name != "plain loop":
            line += f"   +{extra:,.0f} over the plain loop, ~{extra * seconds_per_instruction * 1e6:.1f} us"
        print(line)
    print(f"(us at the plain loop's {seconds_per_instruction * 1e9:.2f} ns per instruction, measured here: a lower "
          f"bound, as the framework's Python code takes longer per instruction than the plain step on average)")


if __name__ == "__main__":
    main()
