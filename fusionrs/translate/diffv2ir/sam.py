"""`translate.seg=sam`: the segmentation map as upstream builds it: the binary union of all
masks from automatic mask generation, white on black (process_masks.py), here with
transformers' SAM (`mask-generation` pipeline) on a local model folder."""

from __future__ import annotations

import numpy as np
from PIL import Image


def load_sam(path: str):
    import torch
    from transformers import pipeline

    return pipeline("mask-generation", model=path, device=0 if torch.cuda.is_available() else -1)


def sam_union_mask(generator, img: Image.Image, points_per_batch: int = 64) -> Image.Image:
    out = generator(img, points_per_batch=points_per_batch)
    union = np.zeros((img.height, img.width), dtype=bool)
    for m in out["masks"]:
        union |= np.asarray(m, dtype=bool)
    return Image.fromarray(union.astype(np.uint8) * 255, "L").convert("RGB")
