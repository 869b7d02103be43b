"""Re-execute the tutorial notebooks and record what they print in smoke mode.

    python nbs/execute.py              # every notebook in full, in place (minutes on a CPU), then the record
    python nbs/execute.py --record     # only the smoke-mode record (nbs/smoke_record.json)
    python nbs/execute.py 03_init      # only the notebooks whose names contain 03_init

The record holds the numbers each notebook prints when run with SLOWLEARN_SMOKE=1 (timings left out), and the
CPU that printed them.
tests/test_notebooks.py runs the notebooks in smoke mode and compares: when the code changes what a
notebook prints, the committed full outputs are stale too, and the test says to run this script.
"""
from __future__ import annotations

import json
import os
import platform
import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NBS = Path(__file__).parent
RECORD = NBS / "smoke_record.json"
# A number, unless it is a duration or a rate ("1.2 s", "3.4s", "12 ms", "5.6 it/s") or part of a word/path.
NUMBER = re.compile(r"(?<![\w./])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.]|\s*(?:s\b|ms\b|µs\b|it/s|s/))")


USER_NATIVE_BF16 = os.environ.get("SLOWLEARN_NATIVE_BF16")


def execute(path: Path, smoke: bool):
    """The notebook at `path`, executed top to bottom (SLOWLEARN_SMOKE=1 when `smoke`). A smoke run trains as
    on hardware without native bf16 (SLOWLEARN_NATIVE_BF16=0), where the record was made: on a CPU with it,
    precision="auto" would train the wide models in bf16 and print other numbers; a full run asks the hardware
    (or keeps what the caller set)."""
    os.environ["SLOWLEARN_SMOKE"] = "1" if smoke else "0"
    if smoke:
        os.environ["SLOWLEARN_NATIVE_BF16"] = "0"
    elif USER_NATIVE_BF16 is None:
        os.environ.pop("SLOWLEARN_NATIVE_BF16", None)
    else:
        os.environ["SLOWLEARN_NATIVE_BF16"] = USER_NATIVE_BF16
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    nb = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": str(path.parent)}}
    NotebookClient(nb, timeout=3600, kernel_name="python3", resources=resources).execute()
    return nb


def printed_numbers(nb) -> list[float]:
    """Every number in the notebook's printed text and text results, in order, timings left out."""
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stdout":
                texts.append(out.text)
            elif out.output_type == "execute_result":
                texts.append(out.data.get("text/plain", ""))
    return [float(n) for text in texts for n in NUMBER.findall(text)]


def cpu_name() -> str:
    """This machine's CPU model as Linux names it (else `platform.processor()`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def recorded(entry: list[float] | dict) -> tuple[list[float], str | None]:
    """A record entry's numbers and the CPU that printed them (None for entries made before the CPU was kept)."""
    return (entry, None) if isinstance(entry, list) else (entry["numbers"], entry["cpu"])


def _close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol + tol * abs(b)


def stale_numbers(printed: list[float], recorded: list[float], same_cpu: bool = True) -> list[str]:
    """What makes `printed` another notebook run than `recorded`, or [] when it is the same run.

    Same run: as many numbers, every one within 2 % (printing rounds to 3-4 digits), and all but a few
    within 0.2 %. The few are for another CPU: its instruction set picks other oneDNN kernels, which
    round differently, so after a few training steps an accuracy may move by a handful of items (seen in
    CI: 0.6455 against 0.6475 on 2000 images). Not `same_cpu` (another CPU model than the record's), the few
    may move any distance: a smoke run's barely trained model amplifies the rounding (nbs/05's predicted
    probability: 0.877 on a Xeon, 0.764 on an AMD EPYC). A code change that makes the outputs stale moves many."""
    if len(printed) != len(recorded):
        return [f"{len(printed)} numbers printed, {len(recorded)} recorded"]
    moved = [(i, a, b) for i, (a, b) in enumerate(zip(printed, recorded)) if not _close(a, b, 2e-3)]
    far = [f"number {i}: {a} printed, {b} recorded" for i, a, b in moved if same_cpu and not _close(a, b, 2e-2)]
    allowed = max(2, len(recorded) // 10)
    if len(moved) > allowed:
        far.append(f"{len(moved)} of {len(recorded)} numbers moved by over 0.2 % (at most {allowed} may): "
                   + ", ".join(f"#{i} {a} vs {b}" for i, a, b in moved[:8]))
    return far


def main(args: list[str]) -> None:
    record_only = "--record" in args
    names = [a for a in args if not a.startswith("--")]
    paths = [p for p in sorted(NBS.glob("*.ipynb")) if not names or any(n in p.name for n in names)]
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    for path in paths:
        if not record_only:
            print(f"executing {path.name} in full", flush=True)
            nbformat.write(execute(path, smoke=False), path)
        print(f"executing {path.name} in smoke mode", flush=True)
        record[path.name] = {"cpu": cpu_name(), "numbers": printed_numbers(execute(path, smoke=True))}
    RECORD.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {RECORD}")


if __name__ == "__main__":
    main(sys.argv[1:])
