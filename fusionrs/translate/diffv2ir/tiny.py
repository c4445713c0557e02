"""`fusionrs tiny-model diffv2ir OUT`: a tiny random DiffV2IR in the upstream LDM format.

Users smoke-test a cluster with it (convert, translate, build) before paying for the real
checkpoint; tests run the whole translate path on it. Writes OUT/diffv2ir-tiny.ckpt (tensors
only: loads with weights_only=True) and OUT/diffv2ir-tiny.yaml (the LDM config). The non-EMA
UNet weights differ from the EMA ones, so a converter that took the wrong set is caught.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from .configs import tiny_generate_config
from .ldm_keys import ema_key, unet_to_ldm, vae_to_ldm


def build_tiny_components(seed: int = 0):
    """The tiny model as diffusers modules (random weights, every tensor non-zero)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_unet_diffusers_config_from_ldm, create_vae_diffusers_config_from_ldm
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = tiny_generate_config()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**create_unet_diffusers_config_from_ldm(cfg, {}))
    vae = AutoencoderKL(**create_vae_diffusers_config_from_ldm(cfg, {}))
    text = CLIPTextModel(CLIPTextConfig(**cfg["model"]["params"]["fusionrs_text_encoder"]))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in (unet, vae, text):
            for p in m.parameters():  # zero-initialised layers would hide mapping mistakes
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return cfg, unet, vae, text


def write_tiny_checkpoint(out_dir: str | Path, seed: int = 0) -> Path:
    cfg, unet, vae, text = build_tiny_components(seed)
    sd: dict[str, torch.Tensor] = {}
    g = torch.Generator().manual_seed(seed + 2)
    for k, v in unet_to_ldm(unet.state_dict()).items():
        full = f"model.diffusion_model.{k}"
        sd[ema_key(full)] = v.clone()  # the EMA weights: what inference must use
        sd[full] = v + torch.randn(v.shape, generator=g) * 0.05  # training weights: must be ignored
    sd["model_ema.decay"] = torch.tensor(0.9999)
    sd["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    sd.update({f"first_stage_model.{k}": v for k, v in vae_to_ldm(vae.state_dict()).items()})
    sd.update({f"cond_stage_model.transformer.{k}": v for k, v in text.state_dict().items()})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "diffv2ir-tiny.ckpt"
    torch.save({"state_dict": sd, "global_step": 0}, path)
    (out / "diffv2ir-tiny.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
