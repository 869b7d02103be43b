"""Callbacks, one module per concern."""
from .averaging import LookaheadCB, WeightAveragingCB, update_bn
from .compile import CompileCB
from .core import ChannelsLastCB, DeviceCB, MomentumCB
from .distributed import DistributedCB
from .gradients import GradientAccumulationCB, GradientClipCB, GradientMultiplierCB, batchnorm_shifts
from .hooks import ActivationStatsCB
from .logging import CSVLoggerCB, LoggerCB, MLflowCB, ScalarLoggerCB, TensorBoardCB
from .lr_finder import LRFinderCB, SuggestedLRs
from .metrics import MetricsCB
from .mixing import CutMixCB, MixUpCB
from .precision import MixedPrecisionCB, speed_cbs
from .profile import ProfilerCB
from .progress import ProgressCB
from .recorder import RecorderCB
from .schedule import (
           BaseSchedulerCB,
           BatchSchedulerCB,
           EpochSchedulerCB,
           OneCycleCB,
           ParamSchedulerCB,
           combine_scheds,
           one_cycle_lr,
           one_cycle_mom,
           sched_cos,
           sched_exp,
           sched_lin,
           warmup_cos,
)
from .tracking import (
           CheckpointCB,
           EarlyStoppingCB,
           MonitorCB,
           Preempted,
           ReduceLROnPlateauCB,
           TerminateOnNaNCB,
           latest_metric,
)

__all__ = ["DeviceCB", "ChannelsLastCB", "MomentumCB", "ActivationStatsCB", "MetricsCB", "ProgressCB", "RecorderCB",
           "LRFinderCB", "SuggestedLRs", "BaseSchedulerCB", "BatchSchedulerCB", "EpochSchedulerCB", "ParamSchedulerCB",
           "OneCycleCB",
           "sched_lin", "sched_cos", "sched_exp", "combine_scheds", "warmup_cos", "one_cycle_lr", "one_cycle_mom",
           "MixedPrecisionCB", "speed_cbs", "GradientClipCB", "GradientAccumulationCB", "GradientMultiplierCB",
           "batchnorm_shifts", "CheckpointCB", "EarlyStoppingCB",
           "TerminateOnNaNCB", "ReduceLROnPlateauCB", "MonitorCB", "Preempted", "CSVLoggerCB", "latest_metric",
           "ProfilerCB", "DistributedCB", "WeightAveragingCB", "LookaheadCB", "update_bn", "MixUpCB", "CutMixCB", "TensorBoardCB",
           "LoggerCB", "ScalarLoggerCB", "MLflowCB", "CompileCB"]
