"""open_clip backbones by name, with a pretrained tag or a local / s3:// checkpoint file, plus
the tiny debug model (`fusionrs tiny-model clip OUT`) that recipes accept like a real backbone.

One image encoder serves RGB and IR (the paper's shared f_v); the text encoder is CLIP's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

TINY_NAME = "fusionrs-tiny-clip"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def register_config(path: str | Path) -> str:
    """Register a JSON model config with open_clip; the model name is the file's stem."""
    import open_clip

    if not Path(path).is_file():
        raise FileNotFoundError(f"model config {path} not found")
    open_clip.add_model_config(str(path))
    return Path(path).stem


def local_file(uri: str) -> str:
    if not uri or "://" not in uri:
        return uri
    from ..models import CACHE
    from ..storage import Storage
    import hashlib

    dest = CACHE / "clip" / hashlib.sha256(uri.encode()).hexdigest()[:16] / uri.rsplit("/", 1)[-1]
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".partial")
        tmp.write_bytes(Storage(s3_endpoint=os.environ.get("AWS_ENDPOINT_URL", "")).read_bytes(uri))
        tmp.rename(dest)
    return str(dest)


def create_clip(model: str, pretrained: str = "", model_config: str = "", quick_gelu: bool = False):
    """(model, train/val preprocess, tokenizer) for a backbone name and its weights.

    `pretrained`: an open_clip tag (e.g. "openai", "laion2b_s34b_b79k": downloads) or a checkpoint
    file (local or s3://; RemoteCLIP, GeoRSCLIP and our own exports are files)."""
    import open_clip

    if model_config:
        name = register_config(local_file(model_config))
        if name != model:
            raise ValueError(f"clip.model_config defines {name!r} but clip.model is {model!r}")
    net, _, preprocess = open_clip.create_model_and_transforms(
        model, pretrained=local_file(pretrained) or None, force_quick_gelu=quick_gelu)
    return net, preprocess, open_clip.get_tokenizer(model)


def write_tiny_clip(out_dir: str | Path, seed: int = 0) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / f"{TINY_NAME}.json"
    cfg_path.write_text(json.dumps(TINY_CONFIG, indent=1))
    register_config(cfg_path)
    import open_clip

    torch.manual_seed(seed)
    net = open_clip.create_model(TINY_NAME)
    ckpt = out / f"{TINY_NAME}.pt"
    torch.save({"state_dict": net.state_dict()}, ckpt)
    return {"model": TINY_NAME, "model_config": str(cfg_path), "pretrained": str(ckpt)}


def export_open_clip(model: torch.nn.Module, path: str | Path) -> None:
    """A checkpoint that `open_clip.create_model(name, pretrained=path)` loads."""
    sd = {k.removeprefix("module."): v.detach().cpu() for k, v in model.state_dict().items()}
    # Scalars trained as shape [1] (see train.py) go back to open_clip's 0-dim parameters.
    sd = {k: (v.reshape(()) if k in ("logit_scale", "logit_bias") and v.numel() == 1 else v) for k, v in sd.items()}
    torch.save({"state_dict": sd}, path)
