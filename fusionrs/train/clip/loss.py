"""Tri-modal contrastive loss (official implementation §6), with negatives from all workers.

L(a, b) = ½[CE(s·âb̂ᵀ, I) + CE((s·âb̂ᵀ)ᵀ, I)], s = exp(logit_scale), â and b̂ L2-normalised.
Settings combine pair losses: 580k-only (L_rt + L_it + w·L_ri)/(2+w); A-original L_it with the
original caption; B-iraware L_it with the IR-aware caption; C-mixed (L_it,orig + L_it,IR-aware +
L_rt + w·L_ri)/(3+w).

Distributed: each worker's features are all-gathered *with gradients* (as open_clip's
gather_with_grad): every worker computes the loss over the global batch and gradients flow back
to the worker that produced each feature, so the effective negatives are global.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.nn.functional import all_gather  # autograd-aware, unlike dist.all_gather

from fusionrs.config.train import CLIP_SETTINGS as SETTINGS


def gather(x: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return torch.cat(all_gather(x), dim=0)


def pair_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    a = F.normalize(a, dim=-1, eps=1e-6)
    b = F.normalize(b, dim=-1, eps=1e-6)
    logits = logit_scale.exp() * a @ b.t()
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def trimodal_loss(feats: dict[str, torch.Tensor], logit_scale: torch.Tensor, setting: str, w: float = 1.0,
                  distributed: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """feats: rgb, ir, text (original caption), text_ir (IR-aware caption) — those the setting uses."""
    g = {k: gather(v) if distributed else v for k, v in feats.items()}
    parts: dict[str, torch.Tensor] = {}
    if setting == "580k-only":
        parts = {"rgb_text": pair_loss(g["rgb"], g["text"], logit_scale), "ir_text": pair_loss(g["ir"], g["text"], logit_scale),
                 "rgb_ir": pair_loss(g["rgb"], g["ir"], logit_scale)}
        total = (parts["rgb_text"] + parts["ir_text"] + w * parts["rgb_ir"]) / (2 + w)
    elif setting == "A-original":
        parts = {"ir_text": pair_loss(g["ir"], g["text"], logit_scale)}
        total = parts["ir_text"]
    elif setting == "B-iraware":
        parts = {"ir_text_ir": pair_loss(g["ir"], g["text_ir"], logit_scale)}
        total = parts["ir_text_ir"]
    elif setting == "C-mixed":
        parts = {"ir_text": pair_loss(g["ir"], g["text"], logit_scale), "ir_text_ir": pair_loss(g["ir"], g["text_ir"], logit_scale),
                 "rgb_text": pair_loss(g["rgb"], g["text"], logit_scale), "rgb_ir": pair_loss(g["rgb"], g["ir"], logit_scale)}
        total = (parts["ir_text"] + parts["ir_text_ir"] + parts["rgb_text"] + w * parts["rgb_ir"]) / (3 + w)
    else:
        raise ValueError(f"unknown setting {setting!r}; one of {SETTINGS}")
    return total, {k: float(v.detach()) for k, v in parts.items()}
