"""`fusionrs convert-llava SRC OUT [--vision-tower DIR] [--image-size N]`: an original-LLaVA-format
checkpoint (LLaVA-1.5 originals, GeoChat, H2RSVLM / VHM) → a Hugging Face LLaVA folder.

    fusionrs convert-llava ckpt/geochat-7B models/geochat-7b-hf --vision-tower ckpt/clip-vit-large-patch14-336
    fusionrs convert-llava ckpt/vhm_7B models/vhm-7b-hf --vision-tower ckpt/vhm_7b_pretrain_vit
    python -c "from fusionrs.train.vlm.convert_llava import main; main(['SRC', 'OUT'])"

The output (LlavaForConditionalGeneration + LlavaProcessor, safetensors) loads through
`fusionrs.train.vlm.model.load_model` / `load_processor` unchanged. What it does, following
transformers' own convert_llava_weights_to_hf.py where that script decides:
- weights: `model.embed_tokens|layers.N|norm` → the Llama decoder, `lm_head` → the head,
  `model.mm_projector.0/2` → `multi_modal_projector.linear_1/2`; the rotary `inv_freq` buffers of
  old checkpoints are dropped. Loaded with `torch.load(weights_only=True)` or safetensors; a pickle
  that needs more is refused. Anything else left over is an error, never silently dropped.
- vision tower: the CLIP folder that `mm_vision_tower` names (or `vision_tower=`), as the
  original code loads it; a copy saved inside the checkpoint (`model.vision_tower.vision_tower.…`)
  is ignored, as the original loader ignores it, and only compared for the record.
- GeoChat (model_type "geochat") runs the 336-px CLIP tower at 504 px: its position grid is
  interpolated exactly as GeoChat's `clip_interpolate_embeddings` does (class token kept, the
  24×24 grid resized to 36×36, bicubic, align_corners=True, in float32). `image_size=` does the same
  for any tower size.
- tokenizer: `<image>` (special) and `<pad>` are added, the embeddings and head grow to a multiple
  of 64, and the new rows are drawn from N(mean, 1e-5·covariance) of the original input
  embeddings — the HF script's initialisation, made deterministic (seeded, float64 Cholesky).
  A SentencePiece `tokenizer.model` is read without the `sentencepiece` package (protobuf +
  transformers' `generate_merges`, the extraction transformers itself does).
- processor: the tower's CLIP preprocessing (size and crop set to the image size), padded to a
  square with the mean colour when the config says `image_aspect_ratio: pad` (LLaVA's
  expand2square), and a Vicuna v1 chat template (the system prompt, `USER: <image>\\n{q}
  ASSISTANT: {a}</s>`) that reproduces the original token ids; docs/vlm-conversion.md says
  where and why it differs from the original strings.
Writes `fusionrs_convert.json` (SHA-256 of every input and output file, what was done) in OUT.
Needs transformers ≥ 5 (LlamaTokenizer built from vocab + merges, the PIL image-processor backend).
A 7B fp16 checkpoint needs about twice its size in RAM (the shards, then the written copy).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import (
    AddedToken,
    AutoTokenizer,
    CLIPVisionModel,
    GenerationConfig,
    LlamaConfig,
    LlamaTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessorPil,
    LlavaProcessor,
)
from transformers.convert_slow_tokenizer import import_protobuf
from transformers.tokenization_utils_base import generate_merges

from fusionrs.core.models import ensure_local

FORMAT = "fusionrs-convert-llava-1"
SUMMARY = "fusionrs_convert.json"
IMAGE_TOKEN, PAD_TOKEN = "<image>", "<pad>"
PAD_MULTIPLE = 64  # the HF script pads the vocabulary "to 64 for performance reasons"
NEW_ROW_SEED = 0
GEOCHAT_IMAGE_SIZE = 504  # hard-coded in GeoChat's CLIPVisionTower.load_model
ARCHITECTURES = ("LlavaLlamaForCausalLM", "GeoChatLlamaForCausalLM")
# LlamaConfig keys of the original config.json (the rest are LLaVA's mm_* and training keys).
LLAMA_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta",
              "rope_scaling", "attention_bias", "bos_token_id", "eos_token_id")
VICUNA_V1_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                    "The assistant gives helpful, detailed, and polite answers to the user's questions.")
# LLaVA's conv_vicuna_v1 (SeparatorStyle.TWO): system, " ", then "USER: …" + " " and
# "ASSISTANT: …" + "</s>"; the generation prompt ends in "ASSISTANT:". The image goes first in its
# message. The original tokenizes the text after the image as its own chunk, which SentencePiece
# starts with "▁": the space after <image> reproduces that token (docs/vlm-conversion.md).
VICUNA_V1_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] if messages[0]['content'] is string "
    "else messages[0]['content'][0]['text'] %}"
    "{% set turns = messages[1:] %}"
    "{% else %}{% set system = \"" + VICUNA_V1_SYSTEM + "\" %}{% set turns = messages %}{% endif %}"
    "{{ system }} "
    "{% for message in turns %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}" + IMAGE_TOKEN + " \n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


class ConvertError(ValueError):
    pass


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_hashes(folder: Path, prefix: str = "") -> dict[str, str]:
    return {prefix + str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def read_original_config(src: Path) -> dict:
    """config.json as plain JSON: its model_type "llava" would parse as HF's (different) LlavaConfig."""
    path = src / "config.json"
    if not path.exists():
        raise ConvertError(f"{src} has no config.json")
    cfg = json.loads(path.read_text())
    if (src / "adapter_config.json").exists():
        raise ConvertError(f"{src} is an unmerged LoRA adapter; merge it into its base first "
                           "(LLaVA's merge_lora_weights.py)")
    arch = (cfg.get("architectures") or ["?"])[0]
    if arch not in ARCHITECTURES or "mm_vision_tower" not in cfg:
        raise ConvertError(f"{src}: architecture {arch} is not an original LLaVA-Llama checkpoint "
                           f"(expected one of {ARCHITECTURES} with mm_vision_tower)")
    refusals = {
        "mm_projector_type": (cfg.get("mm_projector_type", "linear") != "mlp2x_gelu",
                              "HF LLaVA has the two-layer GELU projector (mlp2x_gelu) only"),
        "mm_use_im_start_end": (bool(cfg.get("mm_use_im_start_end")), "<im_start>/<im_end> prompts are LLaVA-1.0's"),
        "mm_use_im_patch_token": (bool(cfg.get("mm_use_im_patch_token")), "<im_patch> tokens are LLaVA-1.0's"),
        "mm_patch_merge_type": (cfg.get("mm_patch_merge_type", "flat") != "flat",
                                "LLaVA-NeXT's any-resolution tiles: use the llava-hf conversions"),
        "image_aspect_ratio": (cfg.get("image_aspect_ratio") not in (None, "pad", "square"),
                               "only pad and square preprocessing map to LlavaImageProcessor"),
        "mm_vision_select_feature": (cfg.get("mm_vision_select_feature", "patch") not in ("patch", "cls_patch"),
                                     "only patch / cls_patch features exist in HF LLaVA"),
    }
    for key, (refused, why) in refusals.items():
        if refused:
            raise ConvertError(f"{key}={cfg.get(key)!r} is not supported: {why}")
    return cfg


def is_geochat(cfg: dict) -> bool:
    return cfg.get("model_type") == "geochat" or cfg["architectures"][0].startswith("GeoChat")


def resolve_vision_tower(src: Path, cfg: dict, vision_tower: str | None) -> Path:
    """The CLIP folder: `vision_tower` when given, else `mm_vision_tower` if it is a local folder
    (absolute, or relative to SRC). No download: a Hub id has to be fetched first."""
    if vision_tower:
        path = Path(ensure_local(vision_tower))
    else:
        name = cfg["mm_vision_tower"]
        path = next((p for p in (Path(name), src / name) if (p / "config.json").exists()), None)
        if path is None:
            raise ConvertError(f"mm_vision_tower {name!r} is not a local folder: download it (e.g. "
                               f"`huggingface-cli download {name} --local-dir DIR`) and pass --vision-tower DIR "
                               "(vision_tower=DIR from Python)")
    if not (path / "config.json").exists():
        raise ConvertError(f"vision tower {path} has no config.json")
    if not (path / "preprocessor_config.json").exists():
        raise ConvertError(f"vision tower {path} has no preprocessor_config.json: the original code reads its "
                           "image processor from there")
    return path


def checkpoint_files(src: Path) -> list[Path]:
    """The weight files, from the shard index when there is one (other *.bin in the folder, such
    as training_args.bin or mm_projector.bin, are not weights of this model)."""
    for index, single in (("model.safetensors.index.json", "model.safetensors"),
                          ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if (src / index).exists():
            names = sorted(set(json.loads((src / index).read_text())["weight_map"].values()))
            return [src / n for n in names]
        if (src / single).exists():
            return [src / single]
    if (src / "mm_projector.bin").exists():
        raise ConvertError(f"{src} holds only a projector (mm_projector.bin): it needs its base LLM, not a conversion")
    raise ConvertError(f"{src} has no model weights (model*.safetensors or pytorch_model*.bin)")


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as e:
        raise ConvertError(f"refusing to load {path.name}: it holds objects that need arbitrary unpickling "
                           f"({type(e).__name__}). Re-save it as tensors only with a trusted tool, then convert."
                           ) from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConvertError(f"{path.name} is not a state dict of tensors")
    return sd


def load_checkpoint(src: Path) -> tuple[dict[str, torch.Tensor], list[Path]]:
    files = checkpoint_files(src)
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_weights(f))
    return sd, files


def load_original_tokenizer(src: Path):
    """The checkpoint's tokenizer. A tokenizer.json loads as it is; a SentencePiece BPE
    tokenizer.model (Llama/Vicuna) is read the way transformers' SentencePieceExtractor reads it
    (pieces in order, merges from generate_merges, control/user pieces special), without the
    `sentencepiece` package that extractor insists on."""
    if (src / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(str(src))
    if not (src / "tokenizer.model").exists():
        raise ConvertError(f"{src} has neither tokenizer.json nor tokenizer.model")
    cfg = json.loads((src / "tokenizer_config.json").read_text()) if (src / "tokenizer_config.json").exists() else {}
    if cfg.get("tokenizer_class", "LlamaTokenizer") not in ("LlamaTokenizer", "LlamaTokenizerFast"):
        raise ConvertError(f"tokenizer_class {cfg['tokenizer_class']} with only a tokenizer.model is not supported")
    proto = import_protobuf().ModelProto()
    proto.ParseFromString((src / "tokenizer.model").read_bytes())
    if proto.trainer_spec.model_type != 2:  # 2: BPE
        raise ConvertError("tokenizer.model is not a BPE SentencePiece model (Llama's is)")
    if proto.normalizer_spec.precompiled_charsmap or proto.normalizer_spec.name not in ("", "identity"):
        raise ConvertError(f"tokenizer.model normalises text ({proto.normalizer_spec.name}); Llama's does not, "
                           "and LlamaTokenizer would not reproduce it")
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}

    def token(key: str, default: str):
        v = cfg.get(key, default)
        return v["content"] if isinstance(v, dict) else v

    return LlamaTokenizer(
        vocab=vocab, merges=generate_merges(vocab),
        bos_token=token("bos_token", "<s>"), eos_token=token("eos_token", "</s>"),
        unk_token=token("unk_token", "<unk>"),
        legacy=cfg.get("legacy", True), add_bos_token=cfg.get("add_bos_token", True),
        add_eos_token=cfg.get("add_eos_token", False),
        add_prefix_space=cfg.get("add_prefix_space", proto.normalizer_spec.add_dummy_prefix),
        additional_special_tokens=[AddedToken(p.piece, normalized=False, special=p.type == 3)
                                   for p in proto.pieces if p.type in (3, 4)],
        model_max_length=cfg.get("model_max_length", 4096), padding_side=cfg.get("padding_side", "right"))


def interpolate_position_embeddings(pos: torch.Tensor, image_size: int, patch_size: int) -> torch.Tensor:
    """GeoChat's clip_interpolate_embeddings: [1 + n², D] → [1 + m², D], m = image_size // patch;
    the class row kept, the n×n grid resized bicubically with align_corners=True, in float32."""
    n, m = round((pos.shape[0] - 1) ** 0.5), image_size // patch_size
    if n * n != pos.shape[0] - 1:
        raise ConvertError(f"{pos.shape[0] - 1} patch positions do not form a square grid")
    grid = pos[1:].float().T.reshape(1, -1, n, n)
    grid = torch.nn.functional.interpolate(grid, size=(m, m), mode="bicubic", align_corners=True)
    return torch.cat([pos[:1].float(), grid.reshape(-1, m * m).T]).to(pos.dtype)


def new_embedding_rows(embed: torch.Tensor, n: int, seed: int = NEW_ROW_SEED) -> torch.Tensor:
    """`n` draws from N(μ, 1e-5·Σ) of the rows of `embed` (the HF script's
    MultivariateNormal(mu, covariance_matrix=1e-5 * sigma)), from a seeded generator."""
    w = embed.double()
    mu = w.mean(0)
    sigma = (w - mu).T @ (w - mu) / w.shape[0]
    try:
        chol = torch.linalg.cholesky(1e-5 * sigma)
    except torch.linalg.LinAlgError as e:
        raise ConvertError(f"the embedding covariance is not positive definite ({e}); cannot sample new rows") from None
    z = torch.randn(n, w.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (mu + z @ chol.T).to(embed.dtype)


def load_vision_tower(path: Path) -> CLIPVisionModel:
    """The CLIP vision weights of a CLIPVisionModel or full CLIPModel folder (text tower unused),
    loaded by transformers (safetensors, or .bin with weights_only=True) in float32."""
    tower, info = CLIPVisionModel.from_pretrained(str(path), dtype=torch.float32, output_loading_info=True,
                                                  weights_only=True)
    if info["missing_keys"]:
        raise ConvertError(f"vision tower {path} lacks {len(info['missing_keys'])} CLIP vision weights, "
                           f"e.g. {sorted(info['missing_keys'])[:3]}")
    return tower


def split_checkpoint(sd: dict[str, torch.Tensor]) -> tuple[dict, dict, dict, dict, dict]:
    """(decoder, head, projector, in-checkpoint tower, dropped) by the original names."""
    decoder, head, projector, tower, dropped, unknown = {}, {}, {}, {}, {}, []
    for key, value in sd.items():
        if key.endswith(".rotary_emb.inv_freq"):  # recomputed from the config (persistent in old Llama)
            dropped[key] = value
        elif key.startswith("model.vision_tower.vision_tower."):
            tower[key[len("model.vision_tower.vision_tower."):]] = value
        elif key.startswith("model.mm_projector."):
            index, _, param = key[len("model.mm_projector."):].partition(".")
            if index not in ("0", "2"):
                unknown.append(key)
            else:
                projector[f"linear_{1 if index == '0' else 2}.{param}"] = value
        elif key == "lm_head.weight":
            head["weight"] = value
        elif key.startswith("model.") and key.split(".")[1] in ("embed_tokens", "layers", "norm"):
            decoder[key[len("model."):]] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConvertError(f"{len(unknown)} checkpoint tensors have no place in HF LLaVA, e.g. {unknown[:5]}")
    if "embed_tokens.weight" not in decoder or len(projector) != 4:
        raise ConvertError("the checkpoint lacks the decoder embeddings or the mm_projector (0/2 weight and bias)")
    if not head:  # tied checkpoints store no head (the HF script clones the embeddings then)
        head["weight"] = decoder["embed_tokens.weight"].clone()
    return decoder, head, projector, tower, dropped


def compare_in_checkpoint_tower(saved: dict[str, torch.Tensor], converted: dict[str, torch.Tensor]) -> dict:
    """How the tower copy inside the checkpoint relates to the converted one (for the record)."""
    names = {k[len("vision_model."):] if k.startswith("vision_model.") else k: v for k, v in saved.items()}
    common = [k for k in names if k in converted and names[k].shape == converted[k].shape]
    diff = max((float((names[k].float() - converted[k].float()).abs().max()) for k in common), default=None)
    return {"tensors": len(saved), "compared": len(common), "max_abs_diff": diff,
            "used": False, "why": "the original loader ignores it and loads mm_vision_tower"}


def image_processor(tower: Path, image_size: int, pad: bool):
    """The tower's CLIP preprocessing at `image_size` (resize the short side, centre crop), plus
    LLaVA's expand2square (pad with the mean colour) when the config says pad."""
    pre = json.loads((tower / "preprocessor_config.json").read_text())
    keep = ("resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std", "do_convert_rgb")
    return LlavaImageProcessorPil(**{k: pre[k] for k in keep if k in pre}, do_resize=True, do_center_crop=True,
                                  size={"shortest_edge": image_size},
                                  crop_size={"height": image_size, "width": image_size}, do_pad=pad)


def convert_llava(src: str, out: str, vision_tower: str | None = None, image_size: int | None = None) -> dict:
    """Convert the original-LLaVA folder `src` (local or s3://) into the HF LLaVA folder `out`;
    returns the summary also written to OUT/fusionrs_convert.json."""
    src_dir, out_dir = Path(ensure_local(src)), Path(out)
    cfg = read_original_config(src_dir)
    geochat = is_geochat(cfg)
    tower_dir = resolve_vision_tower(src_dir, cfg, vision_tower)
    sd, weight_files = load_checkpoint(src_dir)
    decoder, head, projector, saved_tower, dropped = split_checkpoint(sd)
    del sd
    embed = decoder["embed_tokens.weight"]
    dtype = embed.dtype

    tokenizer = load_original_tokenizer(src_dir)
    n_vocab = embed.shape[0]
    if len(tokenizer) != n_vocab:
        raise ConvertError(f"the tokenizer has {len(tokenizer)} tokens but the embeddings {n_vocab} rows; "
                           "new token ids would collide with trained rows")
    tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    image_id, pad_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    model_vocab = -(-len(tokenizer) // PAD_MULTIPLE) * PAD_MULTIPLE
    # Embedding rows first, then head rows, from one generator: the HF script samples both from
    # the input embeddings' distribution.
    rows = new_embedding_rows(embed, 2 * (model_vocab - n_vocab))
    decoder["embed_tokens.weight"] = torch.cat([embed, rows[:model_vocab - n_vocab]])
    head["weight"] = torch.cat([head["weight"], rows[model_vocab - n_vocab:].to(head["weight"].dtype)])

    tower = load_vision_tower(tower_dir)
    vcfg = tower.config
    native = vcfg.image_size
    target = image_size or (GEOCHAT_IMAGE_SIZE if geochat else native)
    if target % vcfg.patch_size:
        raise ConvertError(f"image size {target} is not a multiple of the patch size {vcfg.patch_size}")
    tower_sd = dict(tower.state_dict())
    pos_key = next(k for k in tower_sd if k.endswith("embeddings.position_embedding.weight"))
    if target != native:
        tower_sd[pos_key] = interpolate_position_embeddings(tower_sd[pos_key], target, vcfg.patch_size)
    tower_sd = {k: v.to(dtype) for k, v in tower_sd.items()}
    vision_config = vcfg.to_dict() | {"image_size": target}
    vision_config.pop("dtype", None)
    if vcfg.hidden_size != cfg.get("mm_hidden_size", vcfg.hidden_size):
        raise ConvertError(f"the vision tower is {vcfg.hidden_size} wide but mm_hidden_size is {cfg['mm_hidden_size']}")

    text = LlamaConfig(**{k: cfg[k] for k in LLAMA_KEYS if cfg.get(k) is not None} | {"vocab_size": model_vocab},
                       pad_token_id=pad_id, tie_word_embeddings=False)
    strategy = {"patch": "default", "cls_patch": "full"}[cfg.get("mm_vision_select_feature", "patch")]
    n_image_tokens = (target // vcfg.patch_size) ** 2 + (strategy == "full")
    config = LlavaConfig(vision_config=vision_config, text_config=text, image_token_id=image_id,
                         vision_feature_layer=cfg.get("mm_vision_select_layer", -1),
                         vision_feature_select_strategy=strategy, projector_hidden_act="gelu",
                         multimodal_projector_bias=True, image_seq_length=n_image_tokens, tie_word_embeddings=False)
    config.dtype = dtype
    # Built on the meta device and filled by assignment: a 7B model is never materialised twice.
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.language_model.load_state_dict(decoder, strict=True, assign=True)
    model.lm_head.load_state_dict(head, strict=True, assign=True)
    model.model.multi_modal_projector.load_state_dict({k: v.to(dtype) for k, v in projector.items()},
                                                      strict=True, assign=True)
    model.model.vision_tower.load_state_dict(tower_sd, strict=True, assign=True)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=pad_id)

    pad = cfg.get("image_aspect_ratio") == "pad"
    processor = LlavaProcessor(image_processor=image_processor(tower_dir, target, pad), tokenizer=tokenizer,
                               patch_size=vcfg.patch_size, vision_feature_select_strategy=strategy,
                               image_token=IMAGE_TOKEN, num_additional_image_tokens=1,
                               chat_template=VICUNA_V1_CHAT_TEMPLATE)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)

    n_native, n_target = native // vcfg.patch_size, target // vcfg.patch_size
    grid = f"{n_native}x{n_native} -> {n_target}x{n_target}"
    summary = {
        "format": FORMAT, "family": "geochat" if geochat else "llava", "source": src, "vision_tower": str(tower_dir),
        "inputs": folder_hashes(src_dir) | folder_hashes(tower_dir, "vision_tower/"),
        "weight_files": [f.name for f in weight_files], "dtype": str(dtype).removeprefix("torch."),
        "image_size": target, "native_image_size": native,
        "position_embeddings": ("native" if target == native else
                                f"interpolated {grid} grid: bicubic, align_corners=True, float32, class token kept"),
        "image_aspect_ratio": "pad" if pad else "square", "image_tokens": n_image_tokens,
        "vision_feature_layer": config.vision_feature_layer, "vision_feature_select_strategy": strategy,
        "image_token": IMAGE_TOKEN, "image_token_id": image_id, "pad_token": PAD_TOKEN, "pad_token_id": pad_id,
        "vocab_size": {"original": n_vocab, "tokenizer": len(tokenizer), "model": model_vocab},
        "new_rows": {"rows": model_vocab - n_vocab, "seed": NEW_ROW_SEED,
                     "init": "N(mean, 1e-5 * covariance) of the original input embeddings (embeddings, then head)"},
        "dropped": {"rotary_inv_freq": len(dropped)},
        "in_checkpoint_tower": compare_in_checkpoint_tower(saved_tower, tower_sd) if saved_tower else None,
        "chat_template": "vicuna_v1",
    }
    summary["outputs"] = folder_hashes(out_dir)
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fusionrs convert-llava",
        description="original LLaVA / GeoChat / H2RSVLM checkpoint → Hugging Face LLaVA folder")
    p.add_argument("src", help="the original checkpoint folder (config.json with mm_vision_tower), local or s3://")
    p.add_argument("out", help="the Hugging Face folder to write")
    p.add_argument("--vision-tower", default=None, help="the CLIP folder; default: mm_vision_tower when it is local")
    p.add_argument("--image-size", type=int, default=None,
                   help="input side in pixels (position grid interpolated); default: the tower's, 504 for GeoChat")
    args = p.parse_args(argv)
    try:
        summary = convert_llava(args.src, args.out, vision_tower=args.vision_tower, image_size=args.image_size)
    except ConvertError as e:
        print(f"convert-llava: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("family", "image_size", "position_embeddings", "vocab_size")}, indent=1))
    print(f"use it with: model.path={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
