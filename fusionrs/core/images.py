"""Safe image decoding, normalisation to 8-bit RGB, JPEG encoding and pHash64.

Every failure is a `ImageReject` with a reason code; nothing becomes a black image. The
official FusionRS code silently replaced unreadable images with black 224x224 pictures; here a
bad file is a reject row that names why.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.fft
from PIL import Image, ImageFile

# Decoders we let run on untrusted bytes (Image.open tries every plugin otherwise).
SAFE_FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "WEBP", "GIF")

# Image reason codes (also listed in docs/schema.md).
EMPTY_FILE = "empty_file"
NOT_AN_IMAGE = "not_an_image"
TOO_MANY_PIXELS = "too_many_pixels"
TRUNCATED = "truncated_or_corrupt"
TOO_SMALL = "too_small"
GRAYSCALE = "grayscale_source"
TRANSPARENT = "mostly_transparent"
UNSUPPORTED_MODE = "unsupported_mode"

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail, never be padded grey


class ImageReject(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class DecodedImage:
    rgb: Image.Image  # 8-bit RGB
    note: str  # "" or what normalisation was applied (cmyk_to_rgb, 16bit_to_8bit, alpha_dropped, ...)
    width: int
    height: int
    format: str


def decode_rgb(data: bytes, *, max_pixels: int, min_side: int, grayscale: str = "reject",
               max_transparent_fraction: float = 0.01) -> DecodedImage:
    """Decode untrusted bytes to 8-bit RGB or raise ImageReject with a reason code."""
    if not data:
        raise ImageReject(EMPTY_FILE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=SAFE_FORMATS)
            w, h = img.size
            # Check the header's size before decoding a single pixel.
            if w * h > max_pixels:
                raise ImageReject(TOO_MANY_PIXELS, f"{w}x{h} > {max_pixels} pixels")
            img.load()  # decoding is lazy: force it inside the try
    except ImageReject:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReject(TOO_MANY_PIXELS, str(e)[:200]) from None
    except Image.UnidentifiedImageError:
        raise ImageReject(NOT_AN_IMAGE, "no safe decoder recognises the bytes") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReject(TRUNCATED, str(e)[:200]) from None
    if min(w, h) < min_side:
        raise ImageReject(TOO_SMALL, f"{w}x{h} < {min_side} px")
    fmt = img.format or ""
    rgb, note = _to_rgb(img, grayscale, max_transparent_fraction)
    # EXIF orientation (cameras, phones, some GIS exports): the pixels are stored rotated and the
    # tag says how to show them. Apply it before anything looks at the pixels (pHash, the IR
    # translation, the stored RGB JPEG, which is re-encoded upright), so RGB and IR agree.
    method = _EXIF_TRANSPOSE.get(_orientation(img))
    if method is not None:
        rgb = rgb.transpose(method)
        note = "+".join(x for x in ("exif_rotated", note) if x)
    return DecodedImage(rgb=rgb, note=note, width=rgb.width, height=rgb.height, format=fmt)


# EXIF orientation → the transpose that shows the image upright (as ImageOps.exif_transpose).
_EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                   5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                   8: Image.Transpose.ROTATE_90}


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a malformed EXIF block: treat as upright, as viewers do
        return 1


def _to_rgb(img: Image.Image, grayscale: str, max_transparent: float) -> tuple[Image.Image, str]:
    mode = img.mode
    if mode == "RGB":
        return img, ""
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3]
        transparent = float((alpha < 255).mean())
        if transparent > max_transparent:
            raise ImageReject(TRANSPARENT, f"{transparent:.1%} of pixels are transparent")
        base = rgba.convert("RGB")
        if mode == "LA" or _is_gray(base):
            return _gray(base, grayscale, "alpha_dropped")
        return base, "alpha_dropped"
    if mode == "CMYK":
        return img.convert("RGB"), "cmyk_to_rgb"
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow's I;16 -> L conversion clips at 255 instead of scaling: scale by hand.
        arr = np.asarray(img).astype(np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        return _gray(gray.convert("RGB"), grayscale, "16bit_to_8bit")
    if mode in ("L", "1"):
        return _gray(img.convert("RGB"), grayscale, "")
    if mode == "P":
        conv = img.convert("RGB")
        return (_gray(conv, grayscale, "") if _is_gray(conv) else (conv, "palette_to_rgb"))
    if mode in ("RGBX", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB"), f"{mode.lower()}_to_rgb"
    raise ImageReject(UNSUPPORTED_MODE, f"PIL mode {mode}")


def _is_gray(rgb: Image.Image) -> bool:
    a = np.asarray(rgb)
    return bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())


def _gray(rgb: Image.Image, policy: str, note: str) -> tuple[Image.Image, str]:
    if policy == "reject":
        raise ImageReject(GRAYSCALE, "single-channel source: not an RGB image")
    return rgb, "+".join(x for x in (note, "gray_to_rgb") if x)


def limit_side(img: Image.Image, max_side: int) -> Image.Image:
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    s = max_side / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)


def encode_jpeg(img: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def phash64(img: Image.Image) -> int:
    """pHash64 as the FusionRS audit computes it (official implementation §3.1).

    8-bit grayscale, 32x32 LANCZOS, orthonormal 2-D DCT-II in float32, top-left 8x8 block
    row-major (DC first); threshold = median of the 63 non-DC coefficients; bit = coeff >
    threshold for all 64 (DC included); packed MSB-first.
    """
    g = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float32)
    block = scipy.fft.dctn(g, type=2, norm="ortho")[:8, :8].astype(np.float32).reshape(-1)
    threshold = np.median(block[1:])
    value = 0
    for bit in block > threshold:
        value = (value << 1) | int(bit)
    return value


def phash_hex(h: int) -> str:
    return f"{h:016x}"


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()
