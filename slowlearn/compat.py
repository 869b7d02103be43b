"""Keeping third-party noise away from users: torcheval's import-time deprecation warnings.

torcheval 0.0.7 decorates functions with `torch.jit.script`, which recent torch deprecates with a
FutureWarning at every import of torcheval's metrics. The warning is about torcheval, not about the
user's code, so slowlearn imports torcheval's modules (its own imports and the user's, once slowlearn
is imported) with that one warning ignored. A global filter would also hide the warning from the
user's own `torch.jit.script` calls, so the filter applies only while a torcheval module executes.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import warnings

__all__ = ["quiet_torcheval_imports"]

JIT_DEPRECATION = r"`torch\.jit\.script` is deprecated"


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=JIT_DEPRECATION, category=FutureWarning)
            self.loader.exec_module(module)

    def __getattr__(self, name):  # get_resource_reader, get_source, ... as the real loader has them
        return getattr(self.loader, name)


class _QuietTorcheval(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] != "torcheval":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_torcheval_imports() -> None:
    """Import torcheval's modules (from now on, whoever imports them) without torch.jit's FutureWarning."""
    if not any(isinstance(finder, _QuietTorcheval) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTorcheval())
