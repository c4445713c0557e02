import io

import numpy as np
import pytest
from PIL import Image

from fusionrs.core import images as im
from fusionrs.dev.sample import bomb_png, draw_scene, jpeg, png

KW = dict(max_pixels=40_000_000, min_side=32)


def scene(cls="farmland", seed=0):
    return draw_scene(cls, np.random.default_rng(seed))


def test_rgb_jpeg_decodes_without_note():
    d = im.decode_rgb(jpeg(scene()), **KW)
    assert d.rgb.mode == "RGB" and d.note == "" and (d.width, d.height) == (256, 256)


@pytest.mark.parametrize("data,reason", [
    (b"", im.EMPTY_FILE),
    (b"plain text, not an image" * 4, im.NOT_AN_IMAGE),
    (jpeg(scene())[:3000], im.TRUNCATED),
    (bomb_png(), im.TOO_MANY_PIXELS),
    (jpeg(scene().resize((20, 20))), im.TOO_SMALL),
    (jpeg(scene().convert("L")), im.GRAYSCALE),
])
def test_hostile_inputs_are_reason_coded(data, reason):
    with pytest.raises(im.ImageReject) as e:
        im.decode_rgb(data, **KW)
    assert e.value.reason == reason


def test_truncated_jpeg_never_becomes_a_padded_image():
    good = jpeg(scene())
    for cut in (len(good) // 3, len(good) // 2, len(good) - 200):
        with pytest.raises(im.ImageReject):
            im.decode_rgb(good[:cut], **KW)


def test_cmyk_and_opaque_alpha_are_converted_with_a_note():
    assert im.decode_rgb(jpeg(scene().convert("CMYK")), **KW).note == "cmyk_to_rgb"
    assert im.decode_rgb(png(scene().convert("RGBA")), **KW).note == "alpha_dropped"


def test_transparent_png_is_rejected():
    a = np.asarray(scene().convert("RGBA")).copy()
    a[:, :100, 3] = 0
    with pytest.raises(im.ImageReject) as e:
        im.decode_rgb(png(Image.fromarray(a, "RGBA")), **KW)
    assert e.value.reason == im.TRANSPARENT


def test_16bit_png_is_scaled_not_clipped():
    ramp = (np.tile(np.linspace(0, 65535, 256), (256, 1))).astype("<u2")
    d = im.decode_rgb(png(Image.fromarray(ramp)), **KW, grayscale="convert")
    g = np.asarray(d.rgb)[..., 0]
    # Pillow's own I;16 -> L clips everything above 255 to white; a scaled ramp spans 0..255.
    assert g[0, 0] == 0 and g[0, -1] == 255 and 120 < g[0, 128] < 136
    assert "16bit_to_8bit" in d.note


def test_tiff_is_accepted(shared_data):
    f = next((shared_data / "ucm-sample").rglob("*.tif"))
    d = im.decode_rgb(f.read_bytes(), **KW)
    assert d.rgb.mode == "RGB" and d.format == "TIFF"


def reference_phash(img: Image.Image) -> int:
    """Independent pHash64: explicit orthonormal DCT-II matrix instead of scipy."""
    g = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    n = 32
    k = np.arange(n)[:, None]
    C = np.sqrt(2 / n) * np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n))
    C[0] /= np.sqrt(2)
    block = (C @ g @ C.T)[:8, :8].reshape(-1)
    bits = block > np.median(block[1:])
    return int("".join("1" if b else "0" for b in bits), 2)


@pytest.mark.parametrize("cls,seed", [("farmland", 1), ("river", 2), ("airport", 3), ("beach", 4)])
def test_phash_matches_independent_dct(cls, seed):
    img = scene(cls, seed)
    assert im.hamming(im.phash64(img), reference_phash(img)) <= 1  # float32 vs float64 at the median


def test_phash_is_robust_to_reencoding_and_resizing():
    img = scene("dense_residential", 5)
    h = im.phash64(img)
    again = Image.open(io.BytesIO(jpeg(img, 60)))
    assert im.hamming(h, im.phash64(again)) <= 4
    assert im.hamming(h, im.phash64(img.resize((200, 200)))) <= 4
    assert im.hamming(h, im.phash64(scene("forest", 6))) > 10
    assert len(im.phash_hex(h)) == 16
