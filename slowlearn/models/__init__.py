"""Models: the seed CNN, ResNet and MLP (`nets`), the speed recipes' net (`speednet`), layers and
initialisation (`init`: GeneralReLU, BatchNorm, Kaiming and LSUV) and `summary`."""
from .init import BatchNorm, GeneralReLU, init_weights, lsuv_init
from .nets import (
                   MLP,
                   ResBlock,
                   conv_block,
                   get_kaiming_initalized_model,
                   get_kaiming_initialized_model,
                   resnet,
                   seed_cnn,
                   seed_cnn_fits,
)
from .speednet import speed_net, whiten_first_conv
from .summary import Summary, summary

__all__ = ["BatchNorm", "GeneralReLU", "init_weights", "lsuv_init", "MLP", "ResBlock", "conv_block",
           "get_kaiming_initalized_model", "get_kaiming_initialized_model", "resnet", "seed_cnn", "seed_cnn_fits",
           "speed_net", "whiten_first_conv", "Summary", "summary"]
