"""Decoding: colour modes decided by the whole set, resizing by cover-and-centre-crop, mixed sizes."""
import numpy as np
import pytest
import torch
from images import data_folder, make_folder  # noqa: F401 (data_folder: an autouse fixture)
from PIL import Image

from slowlearn.data import decode as decode_module
from slowlearn.data.decode import decode_images, image_size
from slowlearn.data.images import image_folder


def test_one_grayscale_image_sorted_first_does_not_make_a_colour_folder_grayscale(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=2)
    cat = root / "train" / "cat"
    Image.new("L", (12, 12), 90).save(cat / "-0-gray.jpg")  # sorted before every other file
    Image.new("RGBA", (12, 12), (10, 20, 30, 0)).save(cat / "-1-alpha.png")
    palette = Image.new("P", (12, 12), 1)
    palette.putpalette([0, 0, 0, 40, 50, 60] + [0] * 762)
    palette.save(cat / "-2-palette.png")
    Image.new("1", (12, 12), 1).save(cat / "-3-bilevel.png")
    dls = image_folder(root, device="cpu", verbose=False)
    x = dls.train.x
    assert x.shape == (10, 3, 12, 12)
    assert (x[0] - 90).abs().max() <= 2 and x[0][0].equal(x[0][1])  # grayscale repeated to RGB (JPEG: about 90)
    assert x[1][:, 5, 5].tolist() == [10, 20, 30] and x[2][:, 5, 5].tolist() == [40, 50, 60]
    assert x[3].eq(255).all()
    gray = image_folder(root, channels=1, device="cpu", verbose=False)
    assert gray.train.x.shape == (10, 1, 12, 12) and gray.train.x[2, 0, 5, 5] == round(0.299 * 40 + 0.587 * 50 + 0.114 * 60)


def test_mixed_sizes_are_an_error_that_suggests_size_and_size_resizes(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=2)
    wide = np.zeros((10, 20, 3), dtype=np.uint8)
    wide[:, 5:15] = 255  # a white centre square between two black bands
    Image.fromarray(wide).save(root / "train" / "dog" / "wide.png")
    with pytest.raises(ValueError, match=r"different sizes: .* is 12x12.*wide.png is 10x20.*Pass size="):
        image_folder(root, device="cpu", verbose=False)
    dls = image_folder(root, size=10, device="cpu", verbose=False)
    assert dls.train.x.shape == (7, 3, 10, 10) and dls.valid.x.shape == (6, 3, 10, 10)
    assert dls.train.x[4].eq(255).all()  # shorter side to 10, then the centre: only the white square is left
    assert dls.resize == {"method": "crop", "interpolation": "bilinear"}  # how predict resizes new images
    tall = image_folder(root, size=(10, 4), device="cpu", verbose=False)
    assert tall.train.x.shape[-2:] == (10, 4) and tall.train.x[4].eq(255).all()
    small = image_folder(root, size=(3, 5), device="cpu", verbose=False)
    assert small.train.x.shape[-2:] == (3, 5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="channels=2"):
        decode_images([], channels=2)
    with pytest.raises(ValueError, match=r"size=\(0, 4\)"):
        decode_images([], size=(0, 4))


@pytest.mark.parametrize("size", [2.5, "64", True, (32.0, 32), (0, 4), (8, 8, 8)])
def test_a_size_that_is_not_whole_pixels_is_named_before_any_decoding(tmp_path, size):
    """image_folder(size=2.5) used to fail with "TypeError: 'float' object is not iterable"."""
    root = make_folder(tmp_path / "pets", n_per_class=2)
    with pytest.raises(ValueError, match=r"size=.*: give a whole number of pixels \(64, square images\) or an "
                                         r"\(h, w\) pair of them"):
        image_folder(root, size=size, device="cpu", verbose=False)
    assert image_size(np.int64(8)) == (8, 8) and image_size([6, 4]) == (6, 4) and image_size(None) is None


def test_pil_images_and_arrays_decode_like_files():
    images = [Image.new("RGB", (4, 4), (1, 2, 3)), np.full((4, 4), 7, dtype=np.uint8)]
    x = decode_images(images, open_item=lambda item: item if isinstance(item, Image.Image) else Image.fromarray(item))
    assert x.shape == (2, 3, 4, 4) and x[0, :, 0, 0].tolist() == [1, 2, 3] and x[1].eq(7).all()
    assert x.dtype == torch.uint8


def test_in_memory_images_of_different_sizes_are_named_by_their_place_not_their_bytes():
    import io
    encoded = []
    for size in [(4, 4), (4, 4), (6, 5)]:
        buffer = io.BytesIO()
        Image.new("L", size).save(buffer, "PNG")
        encoded.append({"bytes": buffer.getvalue() + bytes(4000), "path": None})  # as Hugging Face stores them
    with pytest.raises(ValueError) as error:
        decode_images(encoded, open_item=lambda item: Image.open(io.BytesIO(item["bytes"])))
    assert str(error.value).startswith("Images have different sizes: item 0 is 4x4 (h x w) but item 2 is 5x6.")
    assert len(str(error.value)) < 300


def test_16_bit_grayscale_is_scaled_to_8_bits_and_32_bit_pixels_are_refused(tmp_path):
    levels = np.array([[0, 257, 32896], [65535, 1000, 40000]], dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    x = decode_images([str(tmp_path / "deep.png")])
    assert x.shape == (1, 1, 2, 3) and x[0, 0].tolist() == np.round(levels / 257).astype(int).tolist()
    Image.fromarray(levels.astype(np.int32)).save(tmp_path / "old_pillow.tif")  # as Pillow < 10.3 reads 16-bit PNGs
    assert Image.open(tmp_path / "old_pillow.tif").mode == "I"
    assert decode_images([str(tmp_path / "old_pillow.tif")])[0, 0].tolist() == x[0, 0].tolist()
    Image.fromarray(np.full((2, 3), 100_000, dtype=np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(ValueError, match=r"wide.tif: its pixels are 32-bit integers \(mode 'I'\).*save it as an 8-bit"):
        decode_images([str(tmp_path / "wide.tif")])


def test_jpegs_decode_to_pillows_pixels_in_every_mode(tmp_path):
    g = np.random.default_rng(0)
    files = []
    for i, mode in enumerate(("RGB", "L", "CMYK")):
        bands = len(mode)
        image = Image.fromarray(g.integers(0, 256, (9, 7, bands), dtype=np.uint8).squeeze(-1) if bands == 1 else
                                g.integers(0, 256, (9, 7, bands), dtype=np.uint8), mode=mode)
        files.append(str(tmp_path / f"{i}.jpg"))
        image.save(files[-1], quality=80)
    for channels, mode in ((3, "RGB"), (1, "L")):
        expected = np.stack([np.asarray(Image.open(f).convert(mode)).reshape(9, 7, -1) for f in files])
        assert torch.equal(decode_images(files, channels=channels), torch.from_numpy(expected).permute(0, 3, 1, 2))
    assert torch.equal(decode_images(files), decode_images(files, channels=3))  # one colour image: all RGB


@pytest.mark.parametrize("channels", [None, 1, 3])
@pytest.mark.parametrize("kinds", ["LLRLR", "RLLRL", "LLLLL"])
def test_chunks_fill_the_tensor_with_each_image_as_decoded_on_its_own(tmp_path, monkeypatch, channels, kinds):
    """The tensor is filled chunk by chunk (here of 2 images), a grayscale start widened to RGB when a colour
    image comes: the same pixels, order and layout as stacking the images decoded one by one."""
    g = np.random.default_rng(0)
    files = []
    for i, kind in enumerate(kinds):
        shape = (5, 7) if kind == "L" else (5, 7, 3)
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(g.integers(0, 256, shape, dtype=np.uint8)).save(files[-1])
    alone = [decode_images([f], channels=channels) for f in files]
    wide = 3 if any(x.shape[1] == 3 for x in alone) else 1
    expected = torch.cat([x.expand(-1, wide, -1, -1) for x in alone])  # grayscale repeated, as Pillow's L to RGB
    monkeypatch.setattr(decode_module, "CHUNK", 2)
    x = decode_images(files, channels=channels)
    assert x.dtype == torch.uint8 and x.is_contiguous() and torch.equal(x, expected)
