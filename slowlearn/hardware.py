"""What the hardware at hand runs fast: native bf16 (detected, never guessed) and whether a model
gains from channels-last layout. `speed_settings` turns that into a precision and a layout."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .distributed import rank0_print

__all__ = ["PRECISIONS", "cpu_bf16_features", "native_bf16", "native_bf16_override", "resolve_precision",
           "pays_channels_last", "is_narrow", "SpeedSettings", "speed_settings"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_NATIVE_BF16_ENV = "SLOWLEARN_NATIVE_BF16"  # "0" or "1": what native_bf16 answers, instead of asking the hardware
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
WIDE = 128  # benchmarks/precision.py: wider nets gain from NHWC and bf16, the seed CNN (widest conv 64) does not
_announced: set[str] = set()


def _cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:  # not Linux
        pass
    return set()


def cpu_bf16_features() -> list[str]:
    """The CPU's instruction sets for native bf16 arithmetic (AMX, AVX-512 bf16) as the CPU reports them:
    torch's cpuinfo probe where this torch has it, else the kernel's /proc/cpuinfo flags."""
    probes = {"amx_bf16": getattr(torch.cpu, "_is_amx_tile_supported", None),
              "avx512_bf16": getattr(torch.cpu, "_is_avx512_bf16_supported", None)}
    if all(probes.values()):
        return [name for name, probe in probes.items() if probe()]
    flags = _cpuinfo_flags()
    return [flag for flag in _CPU_BF16_FLAGS if flag in flags]


def native_bf16(device: torch.device | str) -> bool:
    """True where bf16 matmuls and convolutions run in hardware: a CUDA GPU that supports bf16 (Ampere
    or later), or a CPU with AMX or AVX-512 bf16. Elsewhere bf16 is emulated and slower than fp32.
    `SLOWLEARN_NATIVE_BF16=0` (or `1`) in the environment answers for the hardware, e.g. to train on a CPU
    with native bf16 as on one without (the notebooks' smoke runs do, so that what they print does not
    depend on the machine)."""
    override = native_bf16_override()
    if override is not None:
        return override
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(cpu_bf16_features())
    return False


def native_bf16_override() -> bool | None:
    """`SLOWLEARN_NATIVE_BF16` as a bool, None where it is unset or empty."""
    value = os.environ.get(_NATIVE_BF16_ENV, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"{_NATIVE_BF16_ENV}={value!r} is not 0 or 1: set it to 0 to train as on hardware without "
                         f"native bf16, to 1 as on hardware with it, or unset it to ask the hardware")
    return None if value == "" else value == "1"


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """"fp32", "bf16" or "fp16" for `precision` on `device`: "auto" is bf16 where it is native, else fp32.
    fp16 on a CPU is allowed, with a warning: it is several times slower than fp32 there."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "fp16" and device.type == "cpu":
        warnings.warn("fp16 on a CPU is emulated and several times slower than fp32: use precision='bf16' "
                      "(fast on CPUs with AMX or AVX-512 bf16) or 'fp32'", stacklevel=3)
    return precision


def _widest(model: nn.Module, types: tuple[type, ...]) -> int:
    return max((getattr(m, "out_channels", getattr(m, "out_features", 0)) for m in model.modules()
                if isinstance(m, types)), default=0)


def pays_channels_last(model: nn.Module) -> bool:
    """The layout rule: channels-last for CNNs whose widest convolution has at least WIDE filters;
    narrow CNNs such as the seed's run slower in it."""
    return _widest(model, (nn.Conv2d,)) >= WIDE


def is_narrow(model: nn.Module) -> bool:
    """Narrow models (no convolution or linear layer with WIDE outputs, such as the seed CNN) are bound
    by memory traffic and per-op costs, not arithmetic: bf16 gains them little, so "auto" keeps fp32
    for them, and with it the accuracy they were tuned for."""
    return _widest(model, (nn.Conv2d, nn.Linear)) < WIDE


@dataclass(frozen=True)
class SpeedSettings:
    """The chosen precision ("fp32", "bf16", "fp16") and layout, and why."""
    precision: str
    channels_last: bool
    reason: str

    def __str__(self) -> str:
        precision = "fp32" if self.precision == "fp32" else f"{self.precision} autocast"
        return f"{precision}, {'channels-last' if self.channels_last else 'contiguous'} ({self.reason})"


def speed_settings(model: nn.Module, device: torch.device | str, precision: str = "auto",
                   channels_last: bool | None = None, verbose: bool = True) -> SpeedSettings:
    """Precision and layout for training `model` on `device`: "auto" is `resolve_precision`'s choice,
    except fp32 for narrow models (`is_narrow`). `channels_last=None` decides by `pays_channels_last`
    under "auto" and keeps the contiguous layout for an explicit precision. With `verbose`, prints the
    choice the first time it is made in this process."""
    device = torch.device(device)
    narrow = precision == "auto" and is_narrow(model)
    chosen = "fp32" if narrow else resolve_precision(precision, device)
    if channels_last is None:  # an explicit precision keeps torch's default layout, as before "auto" existed
        channels_last = precision == "auto" and pays_channels_last(model)
    if precision != "auto":
        reason = "as asked"
    elif narrow:
        reason = "a narrow model: bf16 would gain it little"
    elif (override := native_bf16_override()) is not None:
        reason = f"{_NATIVE_BF16_ENV} says {'native' if override else 'no native'} bf16"
    elif device.type == "cpu":
        features = cpu_bf16_features()
        reason = f"CPU with {' and '.join(features)}" if features else "this CPU has no native bf16"
    else:
        reason = f"{device.type} {'with' if chosen == 'bf16' else 'without'} native bf16"
    settings = SpeedSettings(chosen, channels_last, reason)
    if verbose and str(settings) not in _announced:
        _announced.add(str(settings))
        rank0_print(f"Training in {settings}")
    return settings
