"""VLMs through transformers: load a Hugging Face folder (local or s3://, copied once per node),
wrap it with LoRA on the language model only, reload an adapter.

Families: Qwen2.5-VL (first), LLaVA-1.5 / LLaVA-NeXT (1.6), InstructBLIP, and LLaVA-family
remote-sensing models (GeoChat, H2RSVLM) converted to HF format — all load with
`AutoModelForImageTextToText` + `AutoProcessor`. LoRA targets are a regex over module names:
plain names (`q_proj`, …, `down_proj`) also hit the vision tower's MLPs (the official adapters
did: 7.2M of their parameters sit in the ViT), so the regex requires the language model's path.
"""

from __future__ import annotations

import re

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForImageTextToText, AutoProcessor

from fusionrs.core.models import ensure_local
from fusionrs.train.vlm.chat import PLAIN_CHAT_TEMPLATE

# Attention and MLP projections of the decoder, under the language model only. Qwen2.5-VL and
# LLaVA (transformers ≥ 5) name it `model.language_model.layers.N`; InstructBLIP `language_model.model.layers.N`.
LORA_TARGETS = r".*language_model\..*layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"


def local_model_dir(uri: str) -> str:
    return str(ensure_local(uri))


def load_processor(uri: str, max_pixels: int = 0, min_pixels: int = 0):
    kwargs = {}
    if max_pixels:
        kwargs["max_pixels"] = max_pixels
    if min_pixels:
        kwargs["min_pixels"] = min_pixels
    processor = AutoProcessor.from_pretrained(local_model_dir(uri), **kwargs)
    if getattr(processor, "chat_template", None) is None:  # InstructBLIP checkpoints ship none
        processor.chat_template = PLAIN_CHAT_TEMPLATE.replace("EOS", processor.tokenizer.eos_token)
    return processor


def load_model(uri: str, dtype: str = "float32", adapter: str = "", attn_implementation: str = "sdpa"):
    """The base model (and a LoRA adapter folder when given, merged only logically: PeftModel)."""
    model = AutoModelForImageTextToText.from_pretrained(local_model_dir(uri), dtype=getattr(torch, dtype),
                                                        attn_implementation=attn_implementation)
    if adapter:
        model = PeftModel.from_pretrained(model, local_model_dir(adapter))
    return model


def lora_modules(model, pattern: str = LORA_TARGETS) -> list[str]:
    rx = re.compile(pattern)
    return [name for name, _ in model.named_modules() if rx.fullmatch(name)]


def add_lora(model, r: int, alpha: int, dropout: float, pattern: str = LORA_TARGETS):
    if not lora_modules(model, pattern):
        raise ValueError(f"LoRA target regex {pattern!r} matches no module of {type(model).__name__}")
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none", task_type="CAUSAL_LM",
                     target_modules=pattern)
    return get_peft_model(model, cfg)
