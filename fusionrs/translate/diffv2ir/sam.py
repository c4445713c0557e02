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


def sam_union_mask(generator, img: Image.Image, points_per_batch: int = 64, **kwargs) -> Image.Image:
    """kwargs go to the mask-generation pipeline (e.g. pred_iou_thresh, stability_score_thresh)."""
    out = generator(img, points_per_batch=points_per_batch, **kwargs)
    union = np.zeros((img.height, img.width), dtype=bool)
    for m in out["masks"]:
        union |= np.asarray(m, dtype=bool)
    return Image.fromarray(union.astype(np.uint8) * 255, "L").convert("RGB")


def write_tiny_sam(out_dir, seed: int = 0) -> str:
    """A tiny random SAM in Hugging Face format (64 px), to smoke-test `translate.seg=sam`."""
    from pathlib import Path

    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = SamConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, output_channels=16, image_size=64,
                           patch_size=8, mlp_dim=64, window_size=0, global_attn_indexes=[1], num_pos_feats=8),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32,
                                 iou_head_hidden_dim=16))
    torch.manual_seed(seed)
    SamModel(config).save_pretrained(out)
    SamProcessor(SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})).save_pretrained(out)
    return str(out)
