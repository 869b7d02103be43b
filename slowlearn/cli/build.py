"""The data and the model that the command-line options name (`--data`, `--size`, `--model`, `--pretrained`, ...),
shared by `train`, `lr-find` and `export`."""
from __future__ import annotations

import argparse

from .common import CLIError
from .data import check_data_args, load_data

OWN_MODELS = ("cnn", "resnet")


def model_name(value: str) -> str:
    """--model: cnn, resnet, a torchvision classification model's name, or timm:<name> (checked when built)."""
    if value in OWN_MODELS or (value.startswith("timm:") and len(value) > 5):
        return value
    import torchvision.models as tvm
    if value in tvm.list_models(module=tvm):
        return value
    raise argparse.ArgumentTypeError(f"give cnn, resnet, a torchvision model name (resnet18, resnet34, convnext_tiny, "
                                     f"efficientnet_b0, ...) or timm:<name>, got {value}")


def is_vision_arch(args) -> bool:
    """Whether --model names a torchvision or timm architecture (made by vision_learner)."""
    return args.model not in OWN_MODELS


def check_model_fits(args, size: int | tuple[int, int] | None) -> None:
    """--model cnn only for images the seed CNN reduces to 1x1 (else it gives several logits per class)."""
    from ..data import image_size
    from ..models import seed_cnn_fits
    size = image_size(size)
    if getattr(args, "pretrained", False) and not is_vision_arch(args):
        raise CLIError(f"--pretrained: --model {args.model} has no pretrained weights; name a torchvision or timm "
                       f"architecture, e.g. --model resnet18 --pretrained")
    if args.model == "cnn" and size is not None and not seed_cnn_fits(size):
        raise CLIError(f"--model cnn: the seed CNN takes images up to 32x32, these are {size[0]}x{size[1]}: use "
                       f"--model resnet, or --size 32")


def model_for(args, dls):
    from ..models import get_kaiming_initialized_model, resnet, seed_cnn
    channels, *hw = dls.train.item_shape
    n_classes = len(dls.classes)
    check_model_fits(args, tuple(hw))
    size = hw[-1]
    if args.model == "resnet":
        return resnet(in_channels=channels, n_classes=n_classes)
    if (channels, size, n_classes) == (1, 28, 10):
        return get_kaiming_initialized_model()
    return seed_cnn(in_channels=channels, n_classes=n_classes)


def checked_data(args):
    """The data the options name, after checking that the model fits it (before any image is decoded)."""
    check_data_args(args)
    check_model_fits(args, args.size)
    return load_data(args)


def data_and_model(args):
    dls = checked_data(args)
    return dls, model_for(args, dls)


def vision_learner_for(args, dls, **kwargs):
    """`vision_learner` for --model (a torchvision or timm name), with --pretrained and --weights; `kwargs` go to it.
    Its errors in command-line terms."""
    from ..models import WeightsNotFoundError
    from ..train import vision_learner
    try:
        return vision_learner(dls, args.model, pretrained=args.pretrained or args.weights is not None,
                              weights=args.weights, **kwargs)
    except WeightsNotFoundError as e:
        raise CLIError(f"--model {args.model} --pretrained: {e.problem}. Download {e.url} and put it at {e.where}, or "
                       f"pass --weights FILE (a .pth state dict or .safetensors), or leave out --pretrained to start "
                       f"from random weights") from None
    except FileNotFoundError as e:
        raise CLIError(f"--weights {args.weights}: no such file") from e
    except (ValueError, TypeError, ImportError) as e:
        raise CLIError(f"--model {args.model}: {str(e).replace('pretrained=False', 'no --pretrained')}") from e


def rebuilt_learner(args, dls):
    """A Learner with the model a run of these options trained, at random weights (its checkpoint has the weights)."""
    from ..learner import Learner
    if not is_vision_arch(args):
        return Learner(model_for(args, dls), dls)
    from ..models import data_shape, pretrained_model, pretrained_splitter
    channels, classes = data_shape(dls)
    try:
        built = pretrained_model(args.model, classes, channels, pretrained=False)
    except (ValueError, ImportError) as e:
        raise CLIError(f"--model {args.model}: {e}") from e
    return Learner(built.model, dls, splitter=pretrained_splitter)
