"""Where pretrained weights come from: offline first, read without running code."""
import os
import time

import pytest
import torch
import torchvision.models as tvm

from models.test_pretrained import image_dls
from slowlearn import Learner, vision_learner
from slowlearn.models import WeightsNotFoundError, weights

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def test_missing_weights_offline_is_a_clear_error_within_seconds(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as error:
        vision_learner(image_dls(), "resnet34", verbose=0)
    assert time.perf_counter() - start < 5
    message = str(error.value)
    expected = tmp_path / "empty" / "hub" / "checkpoints" / "resnet34-b627a593.pth"
    assert str(expected) in message and "offline" in message and "weights='path/to/file'" in message
    assert "https://download.pytorch.org/models/resnet34-b627a593.pth" in message


def test_hf_hub_offline_set_after_import_is_honoured_for_timm_weights(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # after huggingface_hub read its constants at import
    monkeypatch.setattr(weights, "_reachable", lambda *args, **kwargs: pytest.fail("probed the network offline"))
    with pytest.raises(WeightsNotFoundError, match=r"models--timm--no_model\.x1.*offline mode is on"):
        weights.timm_weights_file({"hf_hub_id": "timm/no_model.x1"}, "no_model.x1")


def test_a_cached_file_that_would_run_code_is_refused(torchvision_cache, tmp_path):
    cached = torchvision_cache("resnet18")
    path = tmp_path / "torch-home" / "hub" / "checkpoints" / os.path.basename(tvm.ResNet18_Weights.DEFAULT.url)
    torch.save({**cached, "extra": Learner}, path)  # unpickling it would import and call code
    with pytest.raises(ValueError, match="not a plain state dict"):
        vision_learner(image_dls(), "resnet18", verbose=0)


def test_a_file_of_another_model_is_an_error(tmp_path):
    torch.save(tvm.mobilenet_v3_small().state_dict(), tmp_path / "other.pth")
    with pytest.raises(ValueError, match="does not fit resnet18: missing"):
        vision_learner(image_dls(), "resnet18", weights=str(tmp_path / "other.pth"), verbose=0)


def test_a_cut_short_cached_file_is_damaged_and_to_be_downloaded_again(torchvision_cache, tmp_path):
    torchvision_cache("resnet18")
    url = tvm.ResNet18_Weights.DEFAULT.url
    path = tmp_path / "torch-home" / "hub" / "checkpoints" / os.path.basename(url)
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])  # an interrupted copy
    with pytest.raises(ValueError, match="is damaged: it is cut short") as error:
        vision_learner(image_dls(), "resnet18", verbose=0)
    assert f"delete it, and download {url}" in str(error.value)


@pytest.mark.parametrize("suffix, keep", [(".pth", 0), (".pth", 0.5), (".pt", 0.5), (".safetensors", 0.5)])
def test_a_damaged_weights_file_is_told_apart_from_one_that_would_run_code(tmp_path, suffix, keep):
    path, state = tmp_path / f"weights{suffix}", torch.nn.Linear(8, 4).state_dict()
    if suffix == ".safetensors":
        pytest.importorskip("safetensors.torch").save_file(state, path)
    else:  # .pt: torch.save's pickle format from before torch 1.6, as older downloads have it
        torch.save(state, path, _use_new_zipfile_serialization=suffix == ".pth")
    path.write_bytes(path.read_bytes()[:int(path.stat().st_size * keep)])
    with pytest.raises(ValueError, match=r"is damaged: it .*Copy it again from where it came from"):
        weights.read_state_dict(path)


def test_a_damaged_file_in_the_hugging_face_cache_says_to_delete_the_file_its_link_points_to(tmp_path):
    """The Hugging Face cache keeps a file once, in blobs/, with a link to it under snapshots/: downloading again
    after deleting only the link would link the same damaged file again."""
    pytest.importorskip("safetensors.torch").save_file(torch.nn.Linear(8, 4).state_dict(), tmp_path / "whole")
    repo = tmp_path / "hub" / "models--timm--tiny.x1"
    blob, link = repo / "blobs" / "0123abcd", repo / "snapshots" / "rev1" / "model.safetensors"
    blob.parent.mkdir(parents=True)
    link.parent.mkdir(parents=True)
    blob.write_bytes((tmp_path / "whole").read_bytes()[:100])
    link.symlink_to(blob)
    with pytest.raises(ValueError, match="is damaged: it is cut short") as error:
        weights.read_state_dict(link)
    message = str(error.value)
    assert "Hugging Face cache" in message and str(blob) in message and "Copy it again" not in message
