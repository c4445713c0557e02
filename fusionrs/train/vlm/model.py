"""VLMs through transformers: load a Hugging Face folder (local or s3://, copied once per node),
wrap it with LoRA on the language model only, reload an adapter.

Families: Qwen2.5-VL (first), LLaVA-1.5 / LLaVA-NeXT (1.6), InstructBLIP, BLIP-2 (OPT), and
LLaVA-family remote-sensing models (GeoChat, H2RSVLM) converted to HF format
(`fusionrs convert-llava`, docs/vlm-conversion.md) — all load with `AutoModelForImageTextToText`
+ `AutoProcessor`. LoRA targets are a regex over module names: plain names (`q_proj`, …,
`down_proj`, `fc1`) also hit the vision tower's attention and MLPs (the official adapters did: 7.2M
of their parameters sit in the ViT), so the regex requires the language model's path.
BLIP-2 / InstructBLIP with Flan-T5 are refused: their language model is an encoder-decoder, and
our examples are one decoder sequence (prompt + answer, chat.py).
"""

from __future__ import annotations

import json
import re

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from fusionrs.core.models import ensure_local
from fusionrs.core.storage import Storage, join
from fusionrs.train.vlm.chat import PLAIN_CHAT_TEMPLATE

# Attention and MLP projections of the decoder, under the language model only. Qwen2.5-VL and
# LLaVA (transformers ≥ 5) name it `model.language_model.layers.N`; InstructBLIP `language_model.model.layers.N`;
# BLIP-2's OPT `language_model.model.decoder.layers.N`, with `self_attn.out_proj` and the MLP as `fc1`/`fc2`.
LORA_TARGETS = (r".*language_model\..*layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj|out_proj)"
                r"|mlp\.(gate_proj|up_proj|down_proj)|fc1|fc2)")

TRAINED_WITH = "fusionrs_vlm.json"  # written beside an adapter we train: {"inputs", "setting", "tasks", "base"}


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


def refuse_encoder_decoder(config) -> None:
    """BLIP-2 / InstructBLIP with Flan-T5 put the prompt in an encoder and the answer in a
    decoder; chat.encode_example builds one decoder sequence with assistant-only labels, and
    generation continues that sequence. Refused before any weight is read."""
    if not getattr(config, "use_decoder_only_language_model", True) or getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"{type(config).__name__} has an encoder-decoder language model "
                         f"({config.text_config.model_type if hasattr(config, 'text_config') else config.model_type}); "
                         "only decoder-only language models are supported (BLIP-2: use an OPT variant; "
                         "InstructBLIP: a Vicuna variant)")


def load_model(uri: str, dtype: str = "float32", adapter: str = "", attn_implementation: str = "sdpa"):
    """The base model (and a LoRA adapter folder when given, merged only logically: PeftModel)."""
    path = local_model_dir(uri)
    refuse_encoder_decoder(AutoConfig.from_pretrained(path))
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, dtype),
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


def trained_with(adapter_dir: str, storage: Storage | None = None) -> dict:
    """What an adapter was trained on ({} for a base model or an adapter from elsewhere)."""
    if not adapter_dir:
        return {}
    storage = storage or Storage.from_env()
    path = join(adapter_dir, TRAINED_WITH)
    return json.loads(storage.read_bytes(path)) if storage.exists(path) else {}
