"""diffusers → LDM (CompVis) key names, for writing checkpoints in the upstream format.

The inverse of diffusers' `convert_ldm_{unet,vae}_checkpoint` for the SD-1.x layout (4 levels,
2 res blocks per level). Used by the tiny-model writer; tests check that diffusers' own forward
conversion maps these names back to the original weights exactly.
"""

from __future__ import annotations

import torch


def _unet_prefix_map() -> list[tuple[str, str]]:
    m = []  # (ldm, diffusers)
    for i in range(4):
        for j in range(2):
            m.append((f"input_blocks.{3 * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            if i < 3:
                m.append((f"input_blocks.{3 * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(3):
            m.append((f"output_blocks.{3 * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            if i > 0:
                m.append((f"output_blocks.{3 * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < 3:
            m.append((f"input_blocks.{3 * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
            m.append((f"output_blocks.{3 * i + 2}.{1 if i == 0 else 2}.", f"up_blocks.{i}.upsamplers.0."))
    m.append(("middle_block.1.", "mid_block.attentions.0."))
    for j in range(2):
        m.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    return m


_UNET_FIXED = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
               "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
_RESNET = [("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("norm2.", "out_layers.0."),
           ("conv2.", "out_layers.3."), ("time_emb_proj.", "emb_layers.1."), ("conv_shortcut.", "skip_connection.")]


def unet_to_ldm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefixes = _unet_prefix_map()
    out = {}
    for k, v in sd.items():
        new = None
        for d, l in _UNET_FIXED.items():
            if k.startswith(d):
                new = l + k[len(d):]
        if new is None:
            for l, d in prefixes:
                if k.startswith(d):
                    rest = k[len(d):]
                    if ".resnets." in d:
                        for a, b in _RESNET:
                            if rest.startswith(a):
                                rest = b + rest[len(a):]
                    new = l + rest
                    break
        if new is None:
            raise KeyError(f"no LDM name for UNet key {k}")
        out[new] = v
    return out


def vae_to_ldm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        new = k
        for i in range(4):
            new = new.replace(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
            new = new.replace(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            new = new.replace(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{3 - i}.block.")
            new = new.replace(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{3 - i}.upsample.")
        new = new.replace("mid_block.resnets.0.", "mid.block_1.").replace("mid_block.resnets.1.", "mid.block_2.")
        new = new.replace("mid_block.attentions.0.", "mid.attn_1.")
        new = new.replace("conv_norm_out.", "norm_out.").replace("conv_shortcut.", "nin_shortcut.")
        if ".mid.attn_1." in new:
            for a, b in (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")):
                new = new.replace(f"attn_1.{a}", f"attn_1.{b}")
            if new.endswith("weight") and v.ndim == 2:
                v = v[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        out[new] = v
    return out


def ema_key(ldm_unet_key: str) -> str:
    """LitEma buffer name: 'model.diffusion_model.a.b' → 'model_ema.diffusion_modelab'."""
    return "model_ema." + "".join(ldm_unet_key.split(".")[1:])
