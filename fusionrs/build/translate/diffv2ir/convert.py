"""`fusionrs convert-diffv2ir CKPT OUT_DIR`: an LDM/Lightning DiffV2IR checkpoint → a diffusers folder.

- Never unpickles arbitrary objects: `torch.load(weights_only=True)`, or a clear refusal.
- Verifies the file's SHA-256 when one is given (`--sha256` / `translate.model_sha256`).
- Takes the **EMA** UNet (inference uses it upstream) and refuses a checkpoint without it: the
  upstream loader would silently sample with a random-init shadow copy.
- UNet (in_channels=12), VAE and CLIP text encoder go through diffusers' own LDM converters;
  the CLIP tokenizer is built from open_clip's BPE vocabulary unless a folder is given.
- Writes `unet/`, `vae/`, `text_encoder/`, `tokenizer/` (safetensors) and
  `fusionrs_diffv2ir.json` (source hash, per-file hashes, a model id used in fingerprints).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import torch
import yaml
from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    create_unet_diffusers_config_from_ldm,
    create_vae_diffusers_config_from_ldm,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from fusionrs.build.translate.diffv2ir.configs import DIFFV2IR_GENERATE, VIT_L14_TEXT
from fusionrs.build.translate.diffv2ir.tokenizer import write_clip_tokenizer


class ConvertError(ValueError):
    pass


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state_dict(path: str | Path) -> dict:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as e:
        raise ConvertError(
            f"refusing to load {Path(path).name}: it holds objects that need arbitrary unpickling "
            f"({type(e).__name__}). Re-save it as tensors only (state_dict) with a trusted tool, then convert."
        ) from None
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd:
        raise ConvertError(f"{Path(path).name} has no state_dict")
    return sd


def _text_config(orig: dict, sd: dict) -> dict:
    cfg = dict(orig["model"]["params"].get("fusionrs_text_encoder") or VIT_L14_TEXT)
    emb = sd.get("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight")
    if emb is not None and emb.shape[1] != cfg["hidden_size"]:
        raise ConvertError(f"text encoder width {emb.shape[1]} does not match the config's {cfg['hidden_size']}")
    return cfg


def convert_checkpoint(ckpt: str | Path, out_dir: str | Path, *, sha256: str = "", original_config: str | Path | None = None,
                       tokenizer_dir: str | Path | None = None) -> dict:
    ckpt, out = Path(ckpt), Path(out_dir)
    digest = file_sha256(ckpt)
    if sha256 and digest != sha256.lower():
        raise ConvertError(f"{ckpt.name}: SHA-256 {digest} does not match the expected {sha256}")
    sd = load_state_dict(ckpt)

    unet_keys = [k for k in sd if k.startswith("model.diffusion_model.")]
    ema_keys = {k for k in sd if k.startswith("model_ema.") and k not in ("model_ema.decay", "model_ema.num_updates")}
    if not unet_keys:
        raise ConvertError(f"{ckpt.name}: no UNet weights (model.diffusion_model.*)")
    missing = [k for k in unet_keys if "model_ema." + "".join(k.split(".")[1:]) not in ema_keys]
    if len(ema_keys) <= 100 or missing:
        raise ConvertError(f"{ckpt.name}: no EMA UNet weights (model_ema.*: {len(ema_keys)} found, "
                           f"{len(missing)} UNet tensors without one); DiffV2IR inference uses the EMA UNet")

    side = ckpt.with_suffix(".yaml")
    cfg_path = Path(original_config) if original_config else (side if side.exists() else None)
    orig = yaml.safe_load(cfg_path.read_text()) if cfg_path else DIFFV2IR_GENERATE

    unet_cfg = create_unet_diffusers_config_from_ldm(orig, sd)
    if unet_cfg["in_channels"] != 12:
        raise ConvertError(f"UNet in_channels is {unet_cfg['in_channels']}, DiffV2IR needs 12")
    unet = UNet2DConditionModel(**unet_cfg)
    unet.load_state_dict(convert_ldm_unet_checkpoint(sd, unet_cfg, extract_ema=True), strict=True)
    vae_cfg = create_vae_diffusers_config_from_ldm(orig, sd)
    vae = AutoencoderKL(**vae_cfg)
    vae.load_state_dict(convert_ldm_vae_checkpoint(sd, vae_cfg), strict=True)
    text_sd = convert_ldm_clip_checkpoint(sd)
    text_sd.pop("text_model.embeddings.position_ids", None)
    text = CLIPTextModel(CLIPTextConfig(**_text_config(orig, sd)))
    text.load_state_dict(text_sd, strict=True)

    out.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out / "unet", safe_serialization=True)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    text.save_pretrained(out / "text_encoder", safe_serialization=True)
    if tokenizer_dir:
        CLIPTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(out / "tokenizer")
    else:
        write_clip_tokenizer(out / "tokenizer")
    EulerAncestralDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                    timestep_spacing="linspace").save_pretrained(out / "scheduler")
    files = {str(p.relative_to(out)): file_sha256(p) for p in sorted(out.rglob("*")) if p.is_file()
             and p.name != "fusionrs_diffv2ir.json"}
    meta = {"format": "fusionrs-diffv2ir-1", "source": ckpt.name, "source_sha256": digest, "ema": True,
            "files": files, "model_id": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]}
    (out / "fusionrs_diffv2ir.json").write_text(json.dumps(meta, indent=1))
    return meta
