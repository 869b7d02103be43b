import warnings

import pytest
import torch

from slowlearn import ChannelsLastCB, MixedPrecisionCB, get_kaiming_initialized_model, resnet
from slowlearn import hardware
from slowlearn.callbacks.precision import speed_cbs
from slowlearn.hardware import (cpu_bf16_features, is_narrow, native_bf16, pays_channels_last, resolve_precision,
                                speed_settings)
from slowlearn.models import MLP
from slowlearn.speednet import speed_net


@pytest.fixture
def cpu(monkeypatch):
    """Mock the CPU's bf16 features: cpu(amx=True) makes torch's cpuinfo probe report AMX."""
    def set_features(amx=False, avx512_bf16=False):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(hardware, "_announced", set())
    return set_features


def test_auto_picks_bf16_on_a_cpu_with_amx_or_avx512_bf16(cpu):
    cpu(amx=True)
    assert cpu_bf16_features() == ["amx_bf16"] and resolve_precision("auto", "cpu") == "bf16"
    cpu(avx512_bf16=True)
    assert cpu_bf16_features() == ["avx512_bf16"] and resolve_precision("auto", "cpu") == "bf16"


def test_auto_keeps_fp32_on_a_cpu_without_native_bf16(cpu):
    cpu()
    assert not native_bf16("cpu") and resolve_precision("auto", "cpu") == "fp32"


def test_cpuinfo_flags_are_read_when_torch_has_no_probe(cpu, monkeypatch):
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


def test_explicit_precisions_are_kept_and_fp16_on_cpu_warns(cpu):
    cpu()
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


def test_auto_keeps_fp32_for_narrow_models_such_as_the_seed_cnn(cpu):
    cpu(amx=True)
    assert is_narrow(get_kaiming_initialized_model()) and is_narrow(MLP(784, [50], 10))
    assert not is_narrow(resnet()) and not is_narrow(MLP(784, [512], 10))
    settings = speed_settings(get_kaiming_initialized_model(), "cpu", verbose=False)
    assert (settings.precision, settings.channels_last) == ("fp32", False)
    assert speed_settings(get_kaiming_initialized_model(), "cpu", "bf16", verbose=False).precision == "bf16"


def test_the_choice_is_printed_once(cpu, capsys):
    cpu(amx=True)
    for _ in range(2):
        settings = speed_settings(resnet(), "cpu")
    assert (settings.precision, settings.channels_last) == ("bf16", True)
    assert capsys.readouterr().out == "Training in bf16 autocast, channels-last (CPU with amx_bf16)\n"
    assert not speed_settings(resnet(), "cpu", "fp32").channels_last  # an explicit precision: torch's layout
    assert capsys.readouterr().out == "Training in fp32, contiguous (as asked)\n"


def test_speed_cbs_give_the_callbacks_of_the_choice(cpu):
    cpu(amx=True)
    cbs = speed_cbs(resnet(), device="cpu", verbose=False)
    assert [type(cb) for cb in cbs] == [ChannelsLastCB, MixedPrecisionCB] and cbs[1].dtype == torch.bfloat16
    cpu()
    assert speed_cbs(get_kaiming_initialized_model(), device="cpu", verbose=False) == []
    assert speed_cbs(resnet(), "fp32", "cpu", verbose=False) == []
    cbs = speed_cbs(resnet(), "fp32", "cpu", channels_last=True, verbose=False)
    assert [type(cb) for cb in cbs] == [ChannelsLastCB]


def test_the_users_own_precision_and_layout_callbacks_win(cpu):
    cpu(amx=True)
    mine = [MixedPrecisionCB("bf16"), ChannelsLastCB()]
    assert speed_cbs(resnet(), device="cpu", verbose=False, given=mine) == []
    assert speed_cbs(resnet(), device="cpu", verbose=False, given=mine[:1]) == []  # as before "auto" existed
    assert [type(cb) for cb in speed_cbs(resnet(), device="cpu", verbose=False, given=mine[1:])] == [MixedPrecisionCB]


def test_train_1cycle_trains_wide_models_in_bf16_channels_last_under_auto(cpu):
    from slowlearn import DataLoaders, TensorLoader, train_1cycle
    cpu(amx=True)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 2
    dls = DataLoaders(TensorLoader(x, y, 4, device="cpu"), TensorLoader(x, y, 4, device="cpu"))
    wide = train_1cycle(resnet(nfs=(8, 128), n_classes=2), n_epochs=1, dls=dls)
    assert {type(cb) for cb in wide.cbs} >= {MixedPrecisionCB, ChannelsLastCB}
    narrow = train_1cycle(get_kaiming_initialized_model(), n_epochs=1, dls=dls)
    assert not {type(cb) for cb in narrow.cbs} & {MixedPrecisionCB, ChannelsLastCB}
