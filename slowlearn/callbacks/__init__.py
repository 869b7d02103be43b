"""Callbacks, one module per concern."""
from .core import DeviceCB, MomentumCB
from .metrics import MetricsCB
from .progress import ProgressCB

__all__ = ["DeviceCB", "MomentumCB", "MetricsCB", "ProgressCB"]
