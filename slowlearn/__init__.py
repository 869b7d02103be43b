"""slowlearn: a callback-driven training framework for PyTorch."""
from .callbacks import DeviceCB, MetricsCB, MomentumCB, ProgressCB
from .data import DataLoaders, TensorLoader, fashion_mnist
from .device import default_device
from .init import GeneralReLU, init_weights, set_seed
from .learner import Callback, CancelBatchException, CancelEpochException, CancelFitException, Learner
from .models import conv_block, get_kaiming_initalized_model, get_kaiming_initialized_model, seed_cnn
from .train import train

__version__ = "0.1.0"
__all__ = ["Learner", "Callback", "CancelBatchException", "CancelEpochException", "CancelFitException",
           "DeviceCB", "MetricsCB", "MomentumCB", "ProgressCB", "DataLoaders", "TensorLoader", "fashion_mnist",
           "default_device", "GeneralReLU", "init_weights", "set_seed", "conv_block", "seed_cnn",
           "get_kaiming_initialized_model", "get_kaiming_initalized_model", "train"]
