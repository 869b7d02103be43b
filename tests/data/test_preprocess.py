import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from slowlearn import DataLoaders, Learner, TensorLoader
from slowlearn.data.preprocess import Preprocessing, preprocessing_of, resize_image, to_batch


def image_learner(channels=1, size=6, resize=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (20, channels, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 3, (20,), generator=g)
    norm = dict(mean=[0.5] * channels, std=[0.25] * channels, device="cpu")
    dls = DataLoaders(TensorLoader(x[:12], y[:12], 4, shuffle=True, seed=0, **norm),
                      TensorLoader(x[12:], y[12:], 4, **norm), classes=["a", "b", "c"], resize=resize)
    torch.manual_seed(0)
    return Learner(nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 3)), dls)


@pytest.mark.parametrize("channels", [1, 3])
def test_every_kind_of_item_gives_the_same_prediction(tmp_path, channels):
    learn = image_learner(channels)
    item = learn.dls.valid.x[2]
    pixels = item.permute(1, 2, 0).squeeze(-1).numpy()  # H x W (x C), as Pillow and NumPy hold images
    Image.fromarray(pixels).save(tmp_path / "item.png")
    reference = learn.get_preds().preds[2]
    items = {"uint8 tensor": item, "float tensor in [0, 1]": item.float() / 255, "PIL image": Image.fromarray(pixels),
             "path": tmp_path / "item.png", "path as str": str(tmp_path / "item.png"), "H x W (x C) array": pixels,
             "C x H x W array": item.numpy(), "float array": pixels.astype(np.float32) / 255}
    for name, x in items.items():
        result = learn.predict(x)
        torch.testing.assert_close(result.probs, reference, atol=1e-6, rtol=0, msg=name)
        assert result.index == int(reference.argmax()) and result.name == "abc"[result.index], name
    batch = learn.predict([item, tmp_path / "item.png"])
    assert batch.index.tolist() == [int(reference.argmax())] * 2


def test_a_16_bit_grayscale_file_predicts_as_its_8_bit_pixels(tmp_path):
    learn = image_learner(1)
    item = learn.dls.valid.x[2]
    Image.fromarray(item[0].numpy().astype(np.uint16) * 257).save(tmp_path / "deep.png")  # the same levels in 16 bits
    expected = learn.get_preds().preds[2]
    torch.testing.assert_close(learn.predict(tmp_path / "deep.png").probs, expected, atol=1e-6, rtol=0)
    Image.fromarray(np.zeros((6, 6), dtype=np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(ValueError, match=r"Cannot read image file .*float.tif: its pixels are floats"):
        learn.predict(tmp_path / "float.tif")


def test_a_colour_jpeg_for_a_grayscale_model_predicts_from_the_training_pixels_and_the_callers_image_is_kept(tmp_path):
    from slowlearn.data.decode import decode_images
    from slowlearn.data.preprocess import _image_item
    g = np.random.default_rng(0)
    Image.fromarray(g.integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg", quality=90)
    prep = Preprocessing(channels=1, size=(8, 8), resize={"method": "crop", "interpolation": "bilinear"})
    trained_on = decode_images([str(tmp_path / "photo.jpg")], channels=1, size=8)[0]
    assert torch.equal(_image_item(tmp_path / "photo.jpg", prep), trained_on)  # drafted and converted alike
    photo = Image.open(tmp_path / "photo.jpg")
    _image_item(photo, prep)
    assert photo.size == (48, 64)  # not drafted in place


def test_uint8_items_match_the_validation_loader_bit_for_bit():
    learn = image_learner(3)
    prep = preprocessing_of(learn.dls)
    assert torch.equal(to_batch(list(learn.dls.valid.x), prep), torch.cat([xb for xb, _ in learn.dls.valid]))


@pytest.mark.parametrize("x, message", [
    (torch.full((1, 6, 6), 200.), r"spans \[200, 200\]: it looks like 0-255 pixel values: pass them as uint8"),
    (torch.randn(1, 6, 6, generator=torch.Generator().manual_seed(0)), "looks already normalised"),
    (torch.zeros(3, 6, 6, dtype=torch.uint8), r"1 channel\(s\), 6x6.*got shape \(3, 6, 6\)"),
    (torch.zeros(1, 8, 8, dtype=torch.uint8), r"got shape \(1, 8, 8\)"),
    (torch.zeros(1, 1, 1, 6, 6, dtype=torch.uint8), r"a batch N x C x H x W\); got shape \(1, 1, 1, 6, 6\)"),
    (torch.zeros(1, 6, 6, dtype=torch.int64), "Got a torch.int64 image: pass uint8"),
])
def test_ambiguous_items_are_refused_with_what_to_pass(x, message):
    with pytest.raises(ValueError, match=message):
        image_learner().predict(x)


def test_other_objects_are_refused():
    with pytest.raises(TypeError, match="Cannot predict on a dict"):
        image_learner().predict({"image": 1})


def test_a_file_of_another_size_is_resized_only_when_the_training_images_were(tmp_path):
    Image.fromarray(np.full((9, 12), 7, dtype=np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match=r"takes 6x6 images .* not resized; got 9x12") as error:
        image_learner().predict(tmp_path / "big.png")
    assert str(error.value).startswith(f"{tmp_path / 'big.png'}: The model") and "Cannot read" not in str(error.value)
    learn = image_learner(resize={"method": "crop", "interpolation": "bilinear"})
    expected = learn.predict(torch.full((1, 6, 6), 7, dtype=torch.uint8))
    torch.testing.assert_close(learn.predict(tmp_path / "big.png").probs, expected.probs)
    assert preprocessing_of(learn.dls).resize == {"method": "crop", "interpolation": "bilinear"}


def test_resize_crops_the_centre_or_squishes():
    pixels = np.zeros((10, 20), dtype=np.uint8)
    pixels[:, 4:16] = 255  # the centre is white
    image = Image.fromarray(pixels)
    cropped = np.asarray(resize_image(image, (5, 5), "crop"))
    assert cropped.shape == (5, 5) and cropped.min() > 200  # no black side left in
    squished = np.asarray(resize_image(image, (5, 6), "squish"))
    assert squished.shape == (5, 6) and squished[:, 0].max() < 50 and squished[:, 3].min() > 200
    with pytest.raises(ValueError, match="Unknown resize method 'zoom'"):
        resize_image(image, (5, 5), "zoom")


def test_a_resize_rule_is_checked():
    with pytest.raises(ValueError, match="resize=.*give {'method': one of \\('crop', 'squish'\\)"):
        Preprocessing(resize={"method": "zoom"})
    with pytest.raises(ValueError, match="kind='text'"):
        Preprocessing(kind="text")


def test_preprocessing_round_trips_through_a_dict():
    prep = preprocessing_of(image_learner(3, resize={"method": "squish", "interpolation": "bilinear"}).dls)
    assert prep.channels == 3 and prep.size == (6, 6) and prep.mean == [0.5] * 3 and prep.scale == 1 / 255
    assert Preprocessing.from_dict(prep.to_dict()) == prep
