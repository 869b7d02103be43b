"""Models: the seed CNN, ResNet and MLP (`nets`), the speed recipes' net (`speednet`), layers and
initialisation (`init`: GeneralReLU, BatchNorm, Kaiming and LSUV), `summary`, and pretrained torchvision and timm
bodies with new heads (`pretrained`, with `weights` for where their weights come from)."""
from .init import BatchNorm, GeneralReLU, init_weights, lsuv_init
from .nets import (
                   MLP,
                   ResBlock,
                   conv_block,
                   data_shape,
                   get_kaiming_initalized_model,
                   get_kaiming_initialized_model,
                   resnet,
                   seed_cnn,
                   seed_cnn_fits,
)
from .pretrained import (
                   DEFAULT_HEAD,
                   HEADS,
                   AdaptiveConcatPool2d,
                   Pretrained,
                   adapt_first_conv,
                   arch_name,
                   concat_pool_head,
                   pretrained_model,
                   pretrained_splitter,
)
from .speednet import speed_net, whiten_first_conv
from .summary import Summary, summary
from .weights import WeightsNotFoundError, offline, read_state_dict

__all__ = ["BatchNorm", "GeneralReLU", "init_weights", "lsuv_init", "MLP", "ResBlock", "conv_block", "data_shape",
           "get_kaiming_initalized_model", "get_kaiming_initialized_model", "resnet", "seed_cnn", "seed_cnn_fits",
           "speed_net", "whiten_first_conv", "Summary", "summary",
           "HEADS", "DEFAULT_HEAD", "Pretrained", "pretrained_model", "pretrained_splitter", "concat_pool_head",
           "AdaptiveConcatPool2d", "adapt_first_conv", "arch_name", "WeightsNotFoundError", "offline",
           "read_state_dict"]
