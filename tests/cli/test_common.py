"""What the command line's modules share: the parser that names options as a user wrote them, and the
translation of the library's messages into command-line terms."""
import pytest

from slowlearn.cli import parser
from slowlearn.cli.common import in_cli_terms, nearest_option

TRAIN_OPTIONS = ["--data", "--images", "--valid-col", "--size", "--valid-pct", "--aug", "--n-train", "--model", "--bs",
                 "--opt", "--precision", "--seed", "--out", "--epochs", "--lr", "--recipe", "--resume", "--quiet",
                 "--verbose", "--tensorboard", "--help"]


@pytest.mark.parametrize("unknown, meant", [
    ("--batch-size", "--bs"), ("--batch_size=64", "--bs"), ("--batchsize", "--bs"), ("--learning-rate", "--lr"),
    ("--num-epochs", "--epochs"), ("--epoch", "--epochs"), ("--optimizer", "--opt"), ("--output", "--out"),
    ("--image-size", "--size"), ("--val-pct", "--valid-pct"), ("--seeds", "--seed"),
    ("--foo", None), ("--checkpoint-every", None),
])
def test_the_nearest_option_to_an_unknown_one(unknown, meant):
    assert nearest_option(unknown, TRAIN_OPTIONS) == meant


def test_the_parser_notes_which_options_were_given():
    args = parser().parse_args(["train", "--bs", "512", "--quiet", "--valid-pct=0.2"])
    assert args.given == {"bs": "--bs", "verbose": "--quiet", "valid_pct": "--valid-pct"}
    assert args.bs == 512 and args.valid_pct == 0.2 and args.epochs == 5 and parser().parse_args(["train"]).given == {}


@pytest.mark.parametrize("library, cli", [
    ("pass valid_pct= (e.g. 0.2) to split", "pass --valid-pct (e.g. 0.2) to split"),
    ("valid_pct=0.25 would ignore the validation folder", "--valid-pct 0.25 would ignore the validation folder"),
    ("n_train=99: there are 9 images", "--n-train 99: there are 9 images"),
    ("valid_col='v' marks no row", "--valid-col 'v' marks no row"),
    ("Pass size= (e.g. size=64) to resize them all.", "Pass --size (e.g. --size 64) to resize them all."),
    ("Did you mean the folder data/pets, which holds train/?", "Did you mean --data data/pets, which holds train/?"),
    ("image_size=3 stays", "image_size=3 stays"),
])
def test_library_messages_in_command_line_terms(library, cli):
    assert in_cli_terms(library) == cli
