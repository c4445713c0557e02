"""`translate.seg=sam`: the segmentation map as upstream builds it: the binary union of all
masks from automatic mask generation, white on black (process_masks.py), here with
transformers' SAM (`mask-generation` pipeline) on a local model folder."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import pipeline


def load_sam(path: str):
    return pipeline("mask-generation", model=path, device=0 if torch.cuda.is_available() else -1)


def sam_union_mask(generator, img: Image.Image, points_per_batch: int = 64, **kwargs) -> Image.Image:
    """kwargs go to the mask-generation pipeline (e.g. pred_iou_thresh, stability_score_thresh)."""
    out = generator(img, points_per_batch=points_per_batch, **kwargs)
    union = np.zeros((img.height, img.width), dtype=bool)
    for m in out["masks"]:
        union |= np.asarray(m, dtype=bool)
    return Image.fromarray(union.astype(np.uint8) * 255, "L").convert("RGB")
