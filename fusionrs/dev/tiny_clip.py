"""`fusionrs tiny-model clip OUT`: a tiny random open_clip model (the CLIP debug model).

A JSON model config plus an open_clip checkpoint file: recipes take it like a real backbone
(`model.name=fusionrs-tiny-clip model.config_json=OUT/fusionrs-tiny-clip.json
model.pretrained=OUT/fusionrs-tiny-clip.pt`), and it loads through the same code path.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch

from fusionrs.train.clip.model import register_config

TINY_NAME = "fusionrs-tiny-clip"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def write_tiny_clip(out_dir: str | Path, seed: int = 0) -> dict:
    """Returns the ClipModelConfig keys that load it: name, config_json, pretrained."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / f"{TINY_NAME}.json"
    cfg_path.write_text(json.dumps(TINY_CONFIG, indent=1))
    register_config(cfg_path)
    torch.manual_seed(seed)
    net = open_clip.create_model(TINY_NAME)
    ckpt = out / f"{TINY_NAME}.pt"
    torch.save({"state_dict": net.state_dict()}, ckpt)
    return {"name": TINY_NAME, "config_json": str(cfg_path.resolve()), "pretrained": str(ckpt.resolve())}
