"""slowlearn: a callback-driven training framework for PyTorch."""
from importlib.metadata import PackageNotFoundError, version

from .augment import BatchAugment
from .callback import (Callback, CancelBatchException, CancelEpochException, CancelFitException, CancelStepException)
from .callbacks import *  # noqa: F403 -- the callbacks' own __all__, re-exported whole
from .callbacks import __all__ as _callback_names
from .checkpoint_io import CheckpointError
from .compat import quiet_torcheval_imports
from .data import DataLoaders, TensorLoader, fashion_mnist
from .device import default_device
from .distributed import is_rank0, rank0_first
from .groups import default_splitter, group_lrs
from .hardware import native_bf16
from .hf_data import from_hf
from .image_data import cifar10, image_csv, image_folder
from .inference import Prediction, Preds, confusion_matrix
from .export import ExportError
from .init import BatchNorm, GeneralReLU, init_weights, lsuv_init, set_seed
from .learner import Learner
from .models import (MLP, ResBlock, conv_block, get_kaiming_initalized_model, get_kaiming_initialized_model, resnet,
                     seed_cnn, summary)
from .optim import SGD, AdaDelta, AdaGrad, Adam, AdamW, MomentumSGD, RMSProp
from .predictor import FilePreds, Predictor, load_learner
from .preprocess import Preprocessing
from .show import plot_confusion_matrix, plot_metrics, plot_top_losses, show_batch, show_results
from .speednet import speed_net
from .train import compare_optimizers, train, train_1cycle

try:
    __version__ = version("slowlearn")  # settings.ini is the one place the version is written
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Learner", "Callback", "CancelBatchException", "CancelEpochException", "CancelFitException", "CancelStepException",
    *_callback_names, "CheckpointError", "rank0_first", "is_rank0",
    "default_splitter", "group_lrs",
    "DataLoaders", "TensorLoader", "fashion_mnist", "image_folder", "image_csv", "cifar10", "from_hf", "BatchAugment",
    "default_device", "native_bf16",
    "GeneralReLU", "init_weights", "lsuv_init", "BatchNorm", "set_seed",
    "conv_block", "seed_cnn", "ResBlock", "resnet", "MLP", "summary", "speed_net", "get_kaiming_initialized_model",
    "get_kaiming_initalized_model",
    "SGD", "MomentumSGD", "RMSProp", "AdaGrad", "AdaDelta", "Adam", "AdamW",
    "train", "train_1cycle", "compare_optimizers",
    "Preds", "Prediction", "confusion_matrix", "show_batch", "show_results", "plot_confusion_matrix",
    "plot_top_losses", "plot_metrics",
    "load_learner", "Predictor", "FilePreds", "Preprocessing", "ExportError",
]

quiet_torcheval_imports()  # for the user's torcheval imports too
