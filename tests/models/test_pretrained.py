"""vision_learner and the pretrained bodies of models/pretrained.py, with weights from models/weights.py: offline, from
a temporary torchvision cache (the `torchvision_cache` fixture) or a fake Hugging Face cache for a tiny timm model,
in a process that sets HF_HUB_OFFLINE=1 before timm is imported. Nothing is downloaded."""
import logging
import os
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch
import torchvision.models as tvm
from images import CLASSES, make_folder
from torch import nn

from slowlearn import DataLoaders, TensorLoader, image_folder, load_learner, vision_learner
from slowlearn.data import preprocessing_of
from slowlearn.models import WeightsNotFoundError, adapt_first_conv, pretrained_model, pretrained_splitter, weights

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def image_dls(channels=3, n=24, size=32, n_classes=4, bs=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % n_classes
    x[y == 1] //= 2  # something to learn
    stats = dict(mean=[0.5] * channels, std=[0.25] * channels, device="cpu")
    return DataLoaders(TensorLoader(x, y, bs, shuffle=True, seed=0, **stats), TensorLoader(x[:16], y[:16], 16, **stats),
                       classes=[f"c{i}" for i in range(n_classes)])


def quiet_learner(dls, arch="resnet18", **kwargs):
    if kwargs.get("weights") is not None:  # a file: the size its weights were trained at is not known
        return vision_learner(dls, arch, verbose=0, precision="fp32", **kwargs)
    with pytest.warns(UserWarning, match="size=224"):  # 32x32 images into an ImageNet body
        return vision_learner(dls, arch, verbose=0, precision="fp32", **kwargs)


def body_state(learn) -> dict:
    return {k.removeprefix("body."): v for k, v in learn.model.state_dict().items() if k.startswith("body.")}


def test_the_body_has_the_cached_weights_and_the_head_one_output_per_class(torchvision_cache):
    cached = torchvision_cache("resnet18")
    learn = quiet_learner(image_dls())
    body = body_state(learn)
    assert set(body) == {k for k in cached if not k.startswith("fc.")}
    assert all(torch.equal(body[k], cached[k]) for k in body)
    assert isinstance(learn.model.head, nn.Linear) and learn.model.head.out_features == 4
    assert learn.model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    assert quiet_learner(image_dls(), n_out=7).model.head.out_features == 7


def test_the_body_starts_frozen_and_the_head_trains(torchvision_cache):
    torchvision_cache("resnet18")
    learn = quiet_learner(image_dls(n=8))
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.fit(1)
    after = learn.model.state_dict()
    assert torch.equal(after["body.conv1.weight"], before["body.conv1.weight"])
    assert torch.equal(after["body.layer4.1.conv2.weight"], before["body.layer4.1.conv2.weight"])
    assert not torch.equal(after["head.weight"], before["head.weight"])
    assert not torch.equal(after["body.bn1.weight"], before["body.bn1.weight"])  # BatchNorm trains, as in fastai


def test_a_resnet_has_three_param_groups_and_a_slice_spreads_over_them(torchvision_cache):
    torchvision_cache("resnet18")
    learn = quiet_learner(image_dls(), lr=slice(1e-4, 1e-2))
    early, late, head = learn.param_groups()
    names = {id(p): n for n, p in learn.model.named_parameters()}
    assert {names[id(p)].split(".")[1] for p in early} == {"conv1", "bn1", "layer1", "layer2"}
    assert {names[id(p)].split(".")[1] for p in late} == {"layer3", "layer4"}
    assert [names[id(p)] for p in head] == ["head.weight", "head.bias"]
    assert [g["lr"] for g in learn.make_optimizer().param_groups] == pytest.approx([1e-4, 1e-3, 1e-2])


def test_other_bodies_have_two_param_groups():
    model = pretrained_model("mobilenet_v3_small", 3, pretrained=False).model
    body, head = pretrained_splitter(model)
    assert len(head) == 2 and len(body) == len(list(model.body.parameters()))


def test_the_loaders_normalise_with_the_weights_statistics_and_exports_record_them(torchvision_cache):
    torchvision_cache("resnet18")
    dls = image_dls()
    transforms = tvm.ResNet18_Weights.DEFAULT.transforms()
    assert transforms.mean == IMAGENET_MEAN and transforms.std == IMAGENET_STD
    quiet_learner(dls)
    for loader in (dls.train, dls.valid):
        assert loader.mean == IMAGENET_MEAN and loader.std == IMAGENET_STD
    xb = next(iter(dls.valid))[0]
    expected = (dls.valid.x[:16].float() / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / \
        torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(xb, expected)
    prep = preprocessing_of(dls)
    assert prep.mean == pytest.approx(IMAGENET_MEAN) and prep.std == pytest.approx(IMAGENET_STD)


def test_random_weights_need_no_file_and_keep_the_data_statistics(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("SLOWLEARN_OFFLINE", "1")
    dls = image_dls()
    learn = vision_learner(dls, tvm.resnet18, pretrained=False, verbose=0)
    assert dls.train.mean == [0.5] * 3
    assert all(p.requires_grad for p in learn.model.parameters())
    assert learn.model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 4)




def test_without_network_the_error_comes_from_a_short_probe_not_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("SLOWLEARN_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    probes = []
    monkeypatch.setattr(weights, "_reachable", lambda url, timeout=weights.PROBE_SECONDS: probes.append(url) or False)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *args, **kwargs: pytest.fail("downloaded"))
    with pytest.raises(WeightsNotFoundError, match="download.pytorch.org cannot be reached"):
        vision_learner(image_dls(), "resnet34", verbose=0)
    assert probes == ["https://download.pytorch.org/models/resnet34-b627a593.pth"]




def test_the_probe_gives_up_within_its_timeout():
    start = time.perf_counter()
    weights._reachable("https://10.255.255.1/x.pth", timeout=0.5)  # an address that never answers
    assert time.perf_counter() - start < 2




@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_from_a_file_with_another_head(tmp_path, suffix, monkeypatch):
    monkeypatch.setenv("SLOWLEARN_OFFLINE", "1")
    torch.manual_seed(1)
    state = tvm.resnet18(num_classes=5).state_dict()  # e.g. pretrained on 5 other classes
    path = tmp_path / f"pretrained{suffix}"
    if suffix == ".safetensors":
        save_file = pytest.importorskip("safetensors.torch").save_file
        save_file(state, path)
    else:
        torch.save(state, path)
    learn = quiet_learner(image_dls(), weights=str(path))
    body = body_state(learn)
    assert all(torch.equal(body[k], state[k]) for k in body) and learn.model.head.out_features == 4
    assert not learn.model.body.conv1.weight.requires_grad  # pretrained: frozen


def test_a_vision_learner_models_own_weights_start_another(tmp_path, monkeypatch):
    monkeypatch.setenv("SLOWLEARN_OFFLINE", "1")
    first = vision_learner(image_dls(n_classes=5), "resnet18", pretrained=False, verbose=0)
    torch.save(first.model.state_dict(), tmp_path / "first.pt")
    second = quiet_learner(image_dls(n_classes=3), weights=tmp_path / "first.pt")
    assert all(torch.equal(v, first.model.state_dict()["body." + k]) for k, v in body_state(second).items())
    assert second.model.head.out_features == 3




def test_a_timm_body_refuses_a_file_of_another_model(tmp_path, caplog):
    """timm loads non-strictly and slowlearn caught only the keys a file lacked: a resnet34 file loaded into a timm
    resnet18 with no error (its extra blocks dropped)."""
    timm = pytest.importorskip("timm")
    state = timm.create_model("test_resnet").state_dict()
    extra = {**state, "layer5.0.conv1.weight": torch.zeros(1)}  # a deeper model's file
    lacking = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    for file, what in ((extra, r"unexpected layer5\.0\.conv1\.weight"), (lacking, r"missing layer4\.0\.")):
        torch.save(file, tmp_path / "other.pth")
        with pytest.raises(ValueError, match=r"other.pth does not fit timm:test_resnet: " + what):
            pretrained_model("timm:test_resnet", 3, weights=tmp_path / "other.pth")
    grey = {**state, "conv1.0.weight": state["conv1.0.weight"].sum(1, keepdim=True)}
    torch.save(grey, tmp_path / "grey.pth")
    with caplog.at_level(logging.WARNING, logger="timm"):
        model = pretrained_model("timm:test_resnet", 3, in_channels=1, weights=tmp_path / "grey.pth").model
    assert torch.equal(model.body.conv1[0].weight, grey["conv1.0.weight"])
    assert "input_size declares 3 source channels" in caplog.text  # timm's other warnings go through


def test_a_grayscale_timm_file_starts_an_rgb_timm_body(tmp_path):
    """A timm model trained on grayscale images, as weights for RGB images: timm refused its 1-channel first conv
    (its pretrained config declares 3), where the torchvision path adapts it."""
    pytest.importorskip("timm")
    grey = pretrained_model("timm:test_resnet", 5, in_channels=1, pretrained=False).model
    torch.save(grey.state_dict(), tmp_path / "grey.pth")
    rgb = pretrained_model("timm:test_resnet", 3, weights=tmp_path / "grey.pth").model
    torch.testing.assert_close(rgb.body.conv1[0].weight, grey.body.conv1[0].weight.repeat(1, 3, 1, 1) / 3)
    four = pretrained_model("timm:test_resnet", 5, in_channels=4, pretrained=False).model
    torch.save(four.state_dict(), tmp_path / "four.pth")
    with pytest.raises(ValueError, match=r"four.pth does not fit timm:test_resnet: .*at most 3 input channels"):
        pretrained_model("timm:test_resnet", 3, weights=tmp_path / "four.pth")


def test_grayscale_data_into_a_three_channel_body(torchvision_cache):
    cached = torchvision_cache("resnet18")
    dls = image_dls(channels=1, n=8)
    learn = quiet_learner(dls)
    conv = learn.model.body.conv1
    assert conv.in_channels == 1
    torch.testing.assert_close(conv.weight, cached["conv1.weight"].sum(1, keepdim=True))
    assert dls.train.mean == pytest.approx([sum(IMAGENET_MEAN) / 3]) and dls.train.std == pytest.approx([0.226])
    learn.fit(1)  # trains
    assert learn.history[-1]["phase"] == "valid"


def test_adapting_the_first_conv_keeps_its_output_on_grey_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    grey = torch.rand(2, 1, 8, 8)
    expected = model(grey.expand(-1, 3, -1, -1))
    adapt_first_conv(model, 1)
    torch.testing.assert_close(model(grey), expected)
    adapt_first_conv(model, 2)
    torch.testing.assert_close(model(grey.expand(-1, 2, -1, -1)), expected)


def test_the_concat_head_is_fastais(torchvision_cache):
    torchvision_cache("resnet18")
    learn = quiet_learner(image_dls(), head="concat")
    head = learn.model.head
    assert [type(m).__name__ for m in head] == ["AdaptiveConcatPool2d", "Flatten", "BatchNorm1d", "Dropout", "Linear",
                                               "ReLU", "BatchNorm1d", "Dropout", "Linear"]
    assert head[4].in_features == 1024 and head[8].out_features == 4
    assert learn.model.body.eval()(torch.zeros(1, 3, 32, 32)).ndim == 4
    assert len(learn.param_groups()) == 3
    with pytest.raises(ValueError, match="head='concat' pools feature maps.*use head='linear'"):
        pretrained_model("vit_b_16", 4, pretrained=False, head="concat")


def test_small_images_warn_with_the_size_to_try(torchvision_cache):
    torchvision_cache("resnet18")
    with pytest.warns(UserWarning, match=r"32x32 but resnet18's weights were trained on 224x224.*size=224"):
        vision_learner(image_dls(), "resnet18", verbose=0)


def test_a_weights_file_does_not_warn_about_a_size_it_may_not_have_been_trained_at(tmp_path, monkeypatch):
    """Issue 24: a body pretrained at 32 px (a user's own file) got the warning meant for 224 px ImageNet weights."""
    monkeypatch.setenv("SLOWLEARN_OFFLINE", "1")
    torch.save(tvm.resnet18(num_classes=5).state_dict(), tmp_path / "own.pth")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*weights were trained on")
        learn = vision_learner(image_dls(), "resnet18", weights=tmp_path / "own.pth", verbose=0)
    assert learn.dls.train.mean == pytest.approx(IMAGENET_MEAN)  # the published weights' statistics, unless stats=


def test_a_refused_argument_leaves_the_loaders_as_they_were(torchvision_cache):
    """vision_learner set the weights' statistics on the loaders, then refused precision='bf32' (or a valid loader
    that takes no statistics, after the train loader had them)."""
    torchvision_cache("resnet18")
    dls = image_dls()
    foreign = DataLoaders(dls.train, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(dls.valid.x)),
                          classes=dls.classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the size warning
        with pytest.raises(ValueError, match="precision='bf32' is not one of"):
            vision_learner(dls, "resnet18", precision="bf32", verbose=0)
        with pytest.raises(TypeError, match="the valid loader .* cannot be told to normalise"):
            vision_learner(foreign, "resnet18", precision="fp32", verbose=0)
    assert dls.train.mean == [0.5] * 3 and dls.valid.std == [0.25] * 3

def test_stats_that_do_not_fit_the_images_channels_are_refused():
    """ImageNet's three means for grayscale images made the loaders give 3-channel batches: the first batch failed."""
    dls = image_dls(channels=1, n=8)
    rgb = r"has 3 mean\(s\) and 3 std\(s\), but the images have 1 channel.*stats=\(\[0.449\], \[0.226\]\)"
    for stats, what in (((IMAGENET_MEAN, IMAGENET_STD), rgb), (([0.5], [0.0]), "a std must be above 0"),
                        ((0.5,), r"give \(mean, std\)")):
        with pytest.raises(ValueError, match=what):
            vision_learner(dls, "resnet18", pretrained=False, stats=stats, verbose=0)
    assert dls.train.mean == [0.5]
    learn = vision_learner(dls, "resnet18", pretrained=False, stats=([0.449], [0.226]), verbose=0, precision="fp32")
    assert dls.train.mean == [0.449] and next(iter(dls.train))[0].shape[1] == 1
    learn.fit(1)

def test_names_that_are_no_architecture_say_so():
    with pytest.raises(ValueError, match="did you mean resnet18"):
        vision_learner(image_dls(), "resnet19", pretrained=False)
    with pytest.raises(ValueError, match="pretrained=False with weights"):
        vision_learner(image_dls(), "resnet18", pretrained=False, weights="w.pth")


def test_names_of_torchvision_models_that_are_no_classifiers_are_refused():
    """get_model_builder took any torchvision model: r3d_18 (video) built, fcn_resnet50 tried to download a backbone
    offline, and quantized builders share the classifiers' names."""
    for arch in ("r3d_18", "fcn_resnet50", "raft_small", tvm.quantization.resnet18, tvm.segmentation.fcn_resnet50):
        with pytest.raises(ValueError, match=r"is not a torchvision classification model.*"
                                             r"list_models\(module=torchvision.models\)"):
            pretrained_model(arch, 4, pretrained=False)
    assert pretrained_model(tvm.resnet18, 4, pretrained=False).name == "resnet18"


@pytest.mark.filterwarnings("ignore:The default weight initialization of")  # torchvision's, not ours
def test_googlenet_and_inception_v3_train_without_their_auxiliary_heads(torchvision_cache, tmp_path):
    """They were built with auxiliary heads, so the model gave a GoogLeNetOutputs tuple in training mode and the
    first step failed; with torchvision's weights, grayscale data failed in their transform_input."""
    cached = torchvision_cache("googlenet")
    learn = quiet_learner(image_dls(channels=1, n=4, size=48, bs=4), "googlenet")
    learn.fit(1)
    assert learn.model.body.aux1 is None and learn.dls.train.mean == [0.5] and learn.dls.train.std == [0.5]
    torch.save(cached, tmp_path / "googlenet.pth")  # with its aux heads, which a weights file may leave out
    from_file = pretrained_model("googlenet", 4, weights=tmp_path / "googlenet.pth").model
    assert torch.equal(from_file.body.conv1.conv.weight, cached["conv1.conv.weight"])
    inception = pretrained_model("inception_v3", 4, pretrained=False).model.train()
    assert inception(torch.zeros(2, 3, 75, 75)).shape == (2, 4)

def test_fine_tune_40_pngs_and_a_new_process_predicts_as_the_learner(torchvision_cache, tmp_path):
    torchvision_cache("resnet18")
    root = make_folder(tmp_path / "pets", n_per_class=7, size=16)  # 21 training and 21 test images
    dls = image_folder(root, bs=8)
    learn = quiet_learner(dls, lr=1e-3)
    learn.fine_tune(1, base_lr=1e-3)
    assert [row["phase"] for row in learn.history] == ["train", "valid"] * 2
    files = sorted((root / "test").rglob("*.png"))[::4]
    expected = torch.stack([learn.predict(f).probs for f in files])
    model = learn.export(tmp_path / "pets.pt2")
    script = textwrap.dedent("""
        import sys, torch
        from slowlearn import load_learner
        predictor = load_learner(sys.argv[1], device="cpu")
        torch.save(torch.stack([predictor.predict(f).probs for f in sys.argv[3:]]), sys.argv[2])
    """)
    result = subprocess.run([sys.executable, "-c", script, str(model), str(tmp_path / "probs.pt"), *map(str, files)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    got = torch.load(tmp_path / "probs.pt", weights_only=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert load_learner(model).classes == CLASSES


TIMM_SCRIPT = """
import os, sys, time
from pathlib import Path
os.environ["HF_HOME"], os.environ["HF_HUB_OFFLINE"] = sys.argv[1], "1"  # before timm and huggingface_hub load
import timm, torch
from safetensors.torch import save_file
from slowlearn import DataLoaders, TensorLoader, load_learner, vision_learner
from slowlearn.models import WeightsNotFoundError

torch.manual_seed(0)
state = timm.create_model("test_resnet").state_dict()  # random weights in the layout of timm's own file
snapshot = Path(sys.argv[1]) / "hub" / "models--timm--test_resnet.r160_in1k" / "snapshots" / ("0" * 40)
snapshot.mkdir(parents=True)
save_file(state, snapshot / "model.safetensors")
(snapshot.parents[1] / "refs").mkdir()
(snapshot.parents[1] / "refs" / "main").write_text("0" * 40)

def learner(channels):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (24, channels, 80, 80), dtype=torch.uint8, generator=g), torch.arange(24) % 3
    dls = DataLoaders(TensorLoader(x, y, 8, shuffle=True, seed=0), TensorLoader(x, y, 24), classes=["a", "b", "c"])
    learn = vision_learner(dls, "timm:test_resnet", verbose=0, precision="fp32")
    body = learn.model.body.state_dict()
    conv = state["conv1.0.weight"] if channels == 3 else state["conv1.0.weight"].sum(1, keepdim=True)
    assert torch.allclose(body["conv1.0.weight"], conv)  # grayscale: summed over the channels, as timm does
    assert all(torch.equal(body[k], state[k]) for k in body if k != "conv1.0.weight"), "body weights differ"
    assert learn.model.head.out_features == 3 and not learn.model.body.layer4[0].conv1.weight.requires_grad
    assert dls.train.mean == [0.5] * channels and dls.valid.std == [0.5] * channels
    assert len(learn.param_groups()) == 3
    return learn, x


learner(1)
learn, x = learner(3)
learn.fine_tune(1)
learn.export("timm.pt2")
torch.testing.assert_close(load_learner("timm.pt2").predict(x[:4]).probs, learn.predict(x[:4]).probs, atol=1e-5, rtol=0)

start = time.perf_counter()
try:
    vision_learner(learn.dls, "timm:resnet10t", verbose=0)
except WeightsNotFoundError as e:
    assert time.perf_counter() - start < 5 and "models--timm--resnet10t" in str(e) and "offline" in str(e), str(e)
else:
    raise AssertionError("no error for weights missing from the cache")
print("ok")
"""


def test_a_timm_model_from_a_fake_hugging_face_cache_offline(tmp_path):
    pytest.importorskip("timm")
    result = subprocess.run([sys.executable, "-c", TIMM_SCRIPT, str(tmp_path / "hf")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env={k: v for k, v in os.environ.items() if not k.startswith("HF_")})
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]

