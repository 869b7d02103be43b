import warnings

import pytest
import torch

from slowlearn import get_kaiming_initialized_model, hardware, resnet
from slowlearn.hardware import (
    cpu_bf16_features,
    is_narrow,
    native_bf16,
    pays_channels_last,
    resolve_precision,
    speed_settings,
)
from slowlearn.models import MLP
from slowlearn.models.speednet import speed_net


def test_auto_picks_bf16_on_a_cpu_with_amx_or_avx512_bf16(cpu_features):
    cpu_features(amx=True)
    assert cpu_bf16_features() == ["amx_bf16"] and resolve_precision("auto", "cpu") == "bf16"
    cpu_features(avx512_bf16=True)
    assert cpu_bf16_features() == ["avx512_bf16"] and resolve_precision("auto", "cpu") == "bf16"


def test_auto_keeps_fp32_on_a_cpu_without_native_bf16(cpu_features):
    cpu_features()
    assert not native_bf16("cpu") and resolve_precision("auto", "cpu") == "fp32"


def test_cpuinfo_flags_are_read_when_torch_has_no_probe(cpu_features, monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.setattr(hardware, "_cpuinfo_flags", lambda: {"avx512f", "avx512_bf16"})
    assert cpu_bf16_features() == ["avx512_bf16"]
    monkeypatch.setattr(hardware, "_cpuinfo_flags", lambda: {"avx512f"})
    assert resolve_precision("auto", "cpu") == "fp32"


def test_cpuinfo_flags_parse_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile\nbugs\t: none\n")
    assert hardware._cpuinfo_flags(info) == {"fpu", "avx512f", "amx_bf16", "amx_tile"}
    assert hardware._cpuinfo_flags(tmp_path / "missing") == set()


def test_auto_on_cuda_follows_native_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation)
    assert resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_precision("auto", "cuda") == "fp32"


def test_explicit_precisions_are_kept_and_fp16_on_cpu_warns(cpu_features):
    cpu_features()
    assert resolve_precision("bf16", "cpu") == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.warns(UserWarning, match="use precision='bf16'"):
        assert resolve_precision("fp16", "cpu") == "fp16"


def test_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match="precision='int8' is not one of auto, fp32, bf16, fp16"):
        resolve_precision("int8", "cpu")


def test_channels_last_rule_keeps_narrow_cnns_contiguous():
    assert not pays_channels_last(get_kaiming_initialized_model())
    assert not pays_channels_last(MLP(4, [8], 2))
    assert pays_channels_last(resnet())
    assert pays_channels_last(speed_net(3))


def test_auto_keeps_fp32_for_narrow_models_such_as_the_seed_cnn(cpu_features):
    cpu_features(amx=True)
    assert is_narrow(get_kaiming_initialized_model()) and is_narrow(MLP(784, [50], 10))
    assert not is_narrow(resnet()) and not is_narrow(MLP(784, [512], 10))
    settings = speed_settings(get_kaiming_initialized_model(), "cpu", verbose=False)
    assert (settings.precision, settings.channels_last) == ("fp32", False)
    assert speed_settings(get_kaiming_initialized_model(), "cpu", "bf16", verbose=False).precision == "bf16"


def test_the_choice_is_printed_once(cpu_features, capsys):
    cpu_features(amx=True)
    for _ in range(2):
        settings = speed_settings(resnet(), "cpu")
    assert (settings.precision, settings.channels_last) == ("bf16", True)
    assert capsys.readouterr().out == "Training in bf16 autocast, channels-last (CPU with amx_bf16)\n"
    assert not speed_settings(resnet(), "cpu", "fp32").channels_last  # an explicit precision: torch's layout
    assert capsys.readouterr().out == "Training in fp32, contiguous (as asked)\n"


def test_the_environment_can_answer_for_the_hardware(cpu_features, monkeypatch, capsys):
    cpu_features(amx=True)
    monkeypatch.setenv("SLOWLEARN_NATIVE_BF16", "0")
    assert not native_bf16("cpu") and resolve_precision("auto", "cpu") == "fp32"
    settings = speed_settings(resnet(), "cpu")
    assert (settings.precision, settings.reason) == ("fp32", "SLOWLEARN_NATIVE_BF16 says no native bf16")
    assert capsys.readouterr().out == "Training in fp32, channels-last (SLOWLEARN_NATIVE_BF16 says no native bf16)\n"
    cpu_features()  # no native bf16, told there is
    monkeypatch.setenv("SLOWLEARN_NATIVE_BF16", "1")
    assert native_bf16("cpu") and speed_settings(resnet(), "cpu", verbose=False).precision == "bf16"
    monkeypatch.setenv("SLOWLEARN_NATIVE_BF16", "")  # empty: the hardware answers
    assert not native_bf16("cpu")


def test_a_wrong_environment_value_says_what_it_takes(monkeypatch):
    monkeypatch.setenv("SLOWLEARN_NATIVE_BF16", "yes")
    with pytest.raises(ValueError, match="SLOWLEARN_NATIVE_BF16='yes' is not 0 or 1: set it to 0 to train as on"):
        native_bf16("cpu")
