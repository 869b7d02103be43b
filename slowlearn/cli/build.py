"""The data and the model that the command-line options name (`--data`, `--size`, `--model`, ...), shared by
`train`, `lr-find` and `export`."""
from __future__ import annotations

from .common import CLIError
from .data import check_data_args, load_data


def check_model_fits(args, size: int | tuple[int, int] | None) -> None:
    """--model cnn only for images the seed CNN reduces to 1x1 (else it gives several logits per class)."""
    from ..data import image_size
    from ..models import seed_cnn_fits
    size = image_size(size)
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


def data_and_model(args):
    check_data_args(args)
    check_model_fits(args, args.size)  # before any image is decoded
    dls = load_data(args)
    return dls, model_for(args, dls)
