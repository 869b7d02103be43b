"""slowlearn: a callback-driven training framework for PyTorch.

The loop and its protocol are at the top (`learner`, `callback`, `checkpoint`, `groups`, `optim`, `train`,
`recipes`, `tuning`, ...); the layers live in packages: `callbacks/`, `data/`, `models/`, `deploy/` (using a
trained model) and `cli/` (the command line)."""
from .callback import Callback, CancelBatchException, CancelEpochException, CancelFitException, CancelStepException
from .callbacks import *  # noqa: F403 -- the callbacks' own __all__, re-exported whole
from .callbacks import __all__ as _callback_names
from .checkpoint_io import CheckpointError
from .compat import quiet_torcheval_imports
from .data import (
                   BatchAugment,
                   DataLoaders,
                   FileLoader,
                   Preprocessing,
                   TensorLoader,
                   cifar10,
                   fashion_mnist,
                   from_hf,
                   image_csv,
                   image_folder,
                   show_batch,
)
from .deploy import ExportError, FilePreds, Prediction, Predictor, Preds, confusion_matrix, load_learner
from .device import default_device
from .distributed import is_rank0, rank0_first
from .groups import default_splitter, group_lrs
from .hardware import native_bf16
from .learner import Learner
from .models import (
                   MLP,
                   BatchNorm,
                   GeneralReLU,
                   ResBlock,
                   conv_block,
                   get_kaiming_initalized_model,
                   get_kaiming_initialized_model,
                   init_weights,
                   lsuv_init,
                   resnet,
                   seed_cnn,
                   speed_net,
                   summary,
)
from .optim import SGD, AdaDelta, AdaGrad, Adam, AdamW, MomentumSGD, RMSProp
from .randomness import set_seed
from .show import plot_confusion_matrix, plot_metrics, plot_top_losses, show_results
from .train import compare_optimizers, train, train_1cycle, vision_learner
from .tuning import find_batch_size
from .version import __version__  # noqa: F401 -- slowlearn.__version__

__all__ = [
    "Learner", "Callback", "CancelBatchException", "CancelEpochException", "CancelFitException", "CancelStepException",
    *_callback_names, "find_batch_size", "CheckpointError", "rank0_first", "is_rank0",
    "default_splitter", "group_lrs",
    "DataLoaders", "TensorLoader", "FileLoader", "fashion_mnist", "image_folder", "image_csv", "cifar10", "from_hf",
    "BatchAugment",
    "default_device", "native_bf16",
    "GeneralReLU", "init_weights", "lsuv_init", "BatchNorm", "set_seed",
    "conv_block", "seed_cnn", "ResBlock", "resnet", "MLP", "summary", "speed_net", "get_kaiming_initialized_model",
    "get_kaiming_initalized_model",
    "SGD", "MomentumSGD", "RMSProp", "AdaGrad", "AdaDelta", "Adam", "AdamW",
    "train", "train_1cycle", "compare_optimizers", "vision_learner",
    "Preds", "Prediction", "confusion_matrix", "show_batch", "show_results", "plot_confusion_matrix",
    "plot_top_losses", "plot_metrics",
    "load_learner", "Predictor", "FilePreds", "Preprocessing", "ExportError",
]

quiet_torcheval_imports()  # for the user's torcheval imports too
