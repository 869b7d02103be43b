"""slowlearn: a callback-driven training framework for PyTorch."""
from .callbacks import (ActivationStatsCB, BaseSchedulerCB, BatchSchedulerCB, ChannelsLastCB, CheckpointCB,
                        CSVLoggerCB, DeviceCB, DistributedCB, EarlyStoppingCB, EpochSchedulerCB,
                        GradientAccumulationCB, GradientClipCB, LRFinderCB, MetricsCB, MixedPrecisionCB, MomentumCB,
                        OneCycleCB, ParamSchedulerCB, ProfilerCB, ProgressCB, RecorderCB, ReduceLROnPlateauCB,
                        SuggestedLRs, TerminateOnNaNCB, combine_scheds, find_batch_size, one_cycle_lr, one_cycle_mom,
                        sched_cos, sched_exp, sched_lin, warmup_cos)
from .data import DataLoaders, TensorLoader, fashion_mnist
from .device import default_device
from .distributed import is_rank0, rank0_first
from .inference import Prediction, Preds, confusion_matrix
from .init import BatchNorm, GeneralReLU, init_weights, lsuv_init, set_seed
from .learner import (Callback, CancelBatchException, CancelEpochException, CancelFitException, CancelStepException,
                      Learner)
from .models import (MLP, ResBlock, conv_block, get_kaiming_initalized_model, get_kaiming_initialized_model, resnet,
                     seed_cnn, summary)
from .optim import SGD, AdaDelta, AdaGrad, Adam, AdamW, MomentumSGD, RMSProp
from .show import plot_confusion_matrix, plot_metrics, plot_top_losses, show_batch, show_results
from .train import compare_optimizers, train, train_1cycle

__version__ = "0.1.0"
__all__ = [
    "Learner", "Callback", "CancelBatchException", "CancelEpochException", "CancelFitException", "CancelStepException",
    "DeviceCB", "ChannelsLastCB", "MetricsCB", "MomentumCB", "ProgressCB", "RecorderCB", "ActivationStatsCB",
    "LRFinderCB", "SuggestedLRs", "BaseSchedulerCB", "BatchSchedulerCB", "EpochSchedulerCB", "ParamSchedulerCB",
    "OneCycleCB",
    "sched_lin", "sched_cos", "sched_exp", "combine_scheds", "warmup_cos", "one_cycle_lr", "one_cycle_mom",
    "MixedPrecisionCB", "GradientClipCB", "GradientAccumulationCB", "CheckpointCB", "EarlyStoppingCB",
    "TerminateOnNaNCB", "ReduceLROnPlateauCB", "CSVLoggerCB", "ProfilerCB", "find_batch_size",
    "DistributedCB", "rank0_first", "is_rank0",
    "DataLoaders", "TensorLoader", "fashion_mnist", "default_device",
    "GeneralReLU", "init_weights", "lsuv_init", "BatchNorm", "set_seed",
    "conv_block", "seed_cnn", "ResBlock", "resnet", "MLP", "summary", "get_kaiming_initialized_model",
    "get_kaiming_initalized_model",
    "SGD", "MomentumSGD", "RMSProp", "AdaGrad", "AdaDelta", "Adam", "AdamW",
    "train", "train_1cycle", "compare_optimizers",
    "Preds", "Prediction", "confusion_matrix", "show_batch", "show_results", "plot_confusion_matrix",
    "plot_top_losses", "plot_metrics",
]
