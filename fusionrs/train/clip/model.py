"""open_clip backbones by name, with a pretrained tag or a local / s3:// checkpoint file (the
tiny debug model from `fusionrs tiny-model clip OUT` is one such file plus its JSON config).

One image encoder serves RGB and IR (the paper's shared f_v); the text encoder is CLIP's.
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch

from fusionrs.core.models import stage_file


def register_config(path: str | Path) -> str:
    """Register a JSON model config with open_clip; the model name is the file's stem."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"model config {path} not found")
    open_clip.add_model_config(str(path))
    return Path(path).stem


def create_clip(model: str, pretrained: str = "", config_json: str = "", quick_gelu: bool = False):
    """(model, preprocess, tokenizer) for a backbone name and its weights.

    `pretrained`: an open_clip tag (e.g. "openai", "laion2b_s34b_b79k": downloads) or a checkpoint
    file (local or s3://; RemoteCLIP, GeoRSCLIP and our own exports are files)."""
    if config_json:
        name = register_config(stage_file(config_json))
        if name != model:
            raise ValueError(f"model.config_json defines {name!r} but model.name is {model!r}")
    net, _, preprocess = open_clip.create_model_and_transforms(
        model, pretrained=stage_file(pretrained) or None, force_quick_gelu=quick_gelu)
    return net, preprocess, open_clip.get_tokenizer(model)


def create_from(cfg):
    """create_clip from a ClipModelConfig."""
    return create_clip(cfg.name, cfg.pretrained, cfg.config_json, cfg.quick_gelu)


def export_open_clip(model: torch.nn.Module, path: str | Path) -> None:
    """A checkpoint that `open_clip.create_model(name, pretrained=path)` loads."""
    sd = {k.removeprefix("module."): v.detach().cpu() for k, v in model.state_dict().items()}
    # Scalars trained as shape [1] (trainer._one_dim_scalars) go back to open_clip's 0-dim parameters.
    sd = {k: (v.reshape(()) if k in ("logit_scale", "logit_bias") and v.numel() == 1 else v) for k, v in sd.items()}
    torch.save({"state_dict": sd}, path)
