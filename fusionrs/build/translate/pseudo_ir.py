"""`pseudo_ir`: a deterministic, CPU-only RGB → infrared-style mapping.

Not a physical model and not DiffV2IR: it gives the build, the tests and the demo IR-looking
images with the properties that matter downstream, in milliseconds per image:
- intensity from a band combination (luminance weighted toward red, the band nearest NIR);
- vegetation brighter (as in near-infrared), from the excess-green index 2G - R - B;
- water darker, from blue dominance at low brightness;
- built-up surfaces (bright, low saturation) slightly brighter;
- colour texture reduced: a light blur, then a contrast stretch to the 1st-99th percentiles;
- three identical channels in a PIL RGB JPEG, as DiffV2IR outputs are stored.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from fusionrs.build.translate.geometry import resize_center_crop
from fusionrs.build.translate.validate import validate_ir_jpeg
from fusionrs.core.images import encode_jpeg
from fusionrs.dataset.schema import IR_OK

VERSION = "pseudo_ir-1"


def pseudo_ir_image(rgb: Image.Image, resolution: int) -> Image.Image:
    img = resize_center_crop(rgb.convert("RGB"), resolution)
    a = np.asarray(img, dtype=np.float32) * np.float32(1 / 255)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    lum = 0.45 * r + 0.40 * g + 0.15 * b
    exg = np.clip(2 * g - r - b, 0, 1)  # vegetation
    # Elementwise max/min: numpy's reductions over a last axis of 3 are several times slower.
    mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    sat = (mx - mn) / (mx + 1e-6)
    water = np.clip((b - np.maximum(r, g)) * 2, 0, 1) * (1 - lum)
    built = np.clip(lum - 0.45, 0, 1) * (1 - sat)
    ir = lum + 0.9 * exg - 0.6 * water + 0.3 * built
    ir_img = Image.fromarray(np.clip(ir * 255, 0, 255).astype(np.uint8), "L").filter(ImageFilter.GaussianBlur(1.0))
    v = np.asarray(ir_img, dtype=np.float32)
    lo, hi = np.percentile(v[::2, ::2], [1, 99])  # a quarter of the pixels is plenty for two percentiles
    v = np.clip((v - lo) / max(hi - lo, 1.0) * 255.0, 0, 255).astype(np.uint8)
    return Image.fromarray(v, "L").convert("RGB")


def identity(cfg) -> dict:
    return {"backend": "pseudo_ir", "version": VERSION, "resolution": cfg.resolution, "jpeg_quality": cfg.jpeg_quality}


class PseudoIRTranslator:
    def __init__(self, cfg):
        self.cfg = cfg
        self.resolution = cfg.resolution
        self.quality = cfg.jpeg_quality

    def identity(self) -> dict:
        return identity(self.cfg)

    def runtime(self) -> dict:
        return {"device": "cpu"}

    def __call__(self, batch: dict) -> dict:
        out_jpeg, status = [], []
        for data in batch["rgb_jpeg"]:
            try:
                ir = encode_jpeg(pseudo_ir_image(Image.open(io.BytesIO(data)), self.resolution), self.quality)
                st = validate_ir_jpeg(ir, self.resolution)
            except Exception as e:  # one bad row must not fail the batch
                ir, st = None, f"translate_error:{type(e).__name__}"
            out_jpeg.append(ir if st == IR_OK else None)
            status.append(st)
        return {**batch, "ir_jpeg": out_jpeg, "ir_status": status}
