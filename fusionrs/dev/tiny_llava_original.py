"""Tiny random checkpoints in the ORIGINAL LLaVA on-disk layouts, the input of `fusionrs convert-llava`.

    from fusionrs.dev.tiny_llava_original import write_tiny_geochat, write_tiny_h2rsvlm
    paths = write_tiny_geochat("out/geochat-tiny")   # {"checkpoint": ..., "vision_tower": ...}
    fusionrs convert-llava out/geochat-tiny/geochat-7B-tiny out/geochat-hf \
        --vision-tower out/geochat-tiny/clip-vit-patch14-336

What a real folder has, at toy widths, so the converter is tested on the layouts it will meet:
- the LlavaLlamaForCausalLM / GeoChatLlamaForCausalLM folder: config.json with the `mm_*` keys,
  weights under `model.embed_tokens`, `model.layers.N`, `model.norm`, `lm_head`,
  `model.mm_projector.0/2`, a SentencePiece `tokenizer.model` (Llama BPE with byte fallback, no
  `<image>` token: the original code splices image features at the placeholder id −200);
- GeoChat (`write_tiny_geochat`): `pytorch_model-0000N-of-00002.bin` shards with an index, the old
  rotary `inv_freq` buffers, and the vision tower also inside (`model.vision_tower.vision_tower.…`)
  with its position grid already extended to 504 px, as GeoChat's merge script saves it after
  `clip_interpolate_embeddings`; the tower itself is an OpenAI-style full CLIP folder
  (text tower too) at the real geometry, 336 px in patches of 14, named by a Hub id the
  converter cannot resolve offline (`mm_vision_tower`), as the real config names
  openai/clip-vit-large-patch14-336;
- H2RSVLM / VHM (`write_tiny_h2rsvlm`): safetensors shards with an index, no tower inside, and its
  own (pre-trained) CLIPVisionModel folder that `mm_vision_tower` names by absolute path.
The tokenizer is trained here with `tokenizers` and written as a SentencePiece model protobuf
(no `sentencepiece` package needed).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPConfig, CLIPModel, LlamaConfig, LlamaForCausalLM
from transformers.convert_slow_tokenizer import import_protobuf

from fusionrs.dev.tiny_vlm import _corpus

VICUNA_V1_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                    "The assistant gives helpful, detailed, and polite answers to the user's questions.")
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# SentencePiece piece types (sentencepiece_model.proto).
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, patch_size=14,
             projection_dim=16, hidden_act="quick_gelu")


def sentencepiece_model(vocab_size: int = 700) -> bytes:
    """A Llama-style SentencePiece BPE model (serialized ModelProto): <unk>, <s>, </s>, the 256
    byte pieces, then merged pieces in merge order (score −rank, as SentencePiece ranks them) and
    single characters last, with a dummy "▁" prefix and byte fallback."""
    bpe = Tokenizer(models.BPE(byte_fallback=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    lines = _corpus() + [VICUNA_V1_SYSTEM + " USER: what is in this image? ASSISTANT: a runway"] * 8
    bpe.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False))
    merges = json.loads(bpe.to_str())["model"]["merges"]
    merged = ["".join(m) if isinstance(m, list) else m.replace(" ", "") for m in merges]
    chars = sorted((p for p in bpe.get_vocab() if len(p) == 1), key=bpe.get_vocab().get)
    proto = import_protobuf().ModelProto()

    def add(piece: str, score: float, kind: int) -> None:
        p = proto.pieces.add()
        p.piece, p.score, p.type = piece, score, kind

    add("<unk>", 0.0, UNKNOWN)
    add("<s>", 0.0, CONTROL)
    add("</s>", 0.0, CONTROL)
    for b in range(256):
        add(f"<0x{b:02X}>", 0.0, BYTE)
    for rank, piece in enumerate(dict.fromkeys(merged + chars)):
        add(piece, -float(rank), NORMAL)
    spec = proto.trainer_spec
    spec.model_type, spec.vocab_size, spec.byte_fallback = 2, len(proto.pieces), True  # 2: BPE
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, -1
    norm = proto.normalizer_spec
    norm.name, norm.add_dummy_prefix, norm.escape_whitespaces = "identity", True, True
    norm.remove_extra_whitespaces = False
    return proto.SerializeToString()


def write_original_tokenizer(out: Path) -> int:
    """tokenizer.model + the slow LlamaTokenizer's config, as LLaVA-1.5 saves them; returns the
    vocabulary size. LLaVA trains with pad = unk."""
    spm = sentencepiece_model()
    (out / "tokenizer.model").write_bytes(spm)
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "legacy": False,
         "clean_up_tokenization_spaces": False, "model_max_length": 2048, "padding_side": "right",
         "sp_model_kwargs": {}, **special}, indent=2))
    proto = import_protobuf().ModelProto()
    proto.ParseFromString(spm)
    return len(proto.pieces)


def original_config(vocab_size: int, tower: str, architecture: str, model_type: str) -> dict:
    """A LLaVA-1.5-style config.json: the Llama keys (transformers 4.31 era) plus the mm_* keys."""
    return {
        "architectures": [architecture], "model_type": model_type, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 0, "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
        "intermediate_size": 128, "max_position_embeddings": 4096, "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-5,
        "rope_scaling": None, "tie_word_embeddings": False, "torch_dtype": "float16",
        "transformers_version": "4.31.0", "use_cache": True, "vocab_size": vocab_size,
        "freeze_mm_mlp_adapter": False, "image_aspect_ratio": "pad", "image_grid_pinpoints": None,
        "mm_hidden_size": TOWER["hidden_size"], "mm_projector_type": "mlp2x_gelu", "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False, "mm_vision_select_feature": "patch", "mm_vision_select_layer": -2,
        "mm_vision_tower": tower, "tune_mm_mlp_adapter": False, "use_mm_proj": True,
    }


def llm_state_dict(cfg: dict, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Decoder + projector under LlavaLlamaForCausalLM's names (it subclasses LlamaForCausalLM)."""
    torch.manual_seed(seed)
    llama = LlamaForCausalLM(LlamaConfig(**{k: cfg[k] for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "max_position_embeddings", "rms_norm_eps")}, tie_word_embeddings=False))
    # Output head at std 0.25, input embeddings at 0.02: a usable logit range (tiny_vlm._save says why).
    with torch.no_grad():
        llama.get_input_embeddings().weight.normal_(0.0, 0.02)
        llama.get_output_embeddings().weight.normal_(0.0, 0.25)
    sd = dict(llama.state_dict())
    # mlp2x_gelu: Sequential(Linear(mm_hidden, hidden), GELU(), Linear(hidden, hidden)).
    proj = torch.nn.Sequential(torch.nn.Linear(cfg["mm_hidden_size"], cfg["hidden_size"]), torch.nn.GELU(),
                               torch.nn.Linear(cfg["hidden_size"], cfg["hidden_size"]))
    sd.update({f"model.mm_projector.{k}": v for k, v in proj.state_dict().items()})
    return {k: v.detach().to(dtype).contiguous() for k, v in sd.items()}


def geochat_interpolate(pos: torch.Tensor, image_size: int, patch_size: int) -> torch.Tensor:
    """GeoChat's CLIPVisionTower.clip_interpolate_embeddings on a [1 + n², D] table: the class
    row kept, the n×n grid resized bicubically (align_corners=True) to (image_size // patch)²."""
    cls_row, grid = pos[:1], pos[1:]
    n, side = int(grid.shape[0] ** 0.5), image_size // patch_size
    grid = grid.T.reshape(1, -1, n, n)
    grid = torch.nn.functional.interpolate(grid, size=side, mode="bicubic", align_corners=True)
    return torch.cat([cls_row, grid.reshape(-1, side * side).T])


def write_shards(out: Path, sd: dict[str, torch.Tensor], safetensors: bool) -> None:
    """Two shards and the index, as save_pretrained (max_shard_size) writes a 7B checkpoint."""
    keys = list(sd)
    half = len(keys) // 2
    stem, ext = ("model", "safetensors") if safetensors else ("pytorch_model", "bin")
    index = f"{stem}.{ext}.index.json"
    weight_map = {}
    for i, part in enumerate((keys[:half], keys[half:]), start=1):
        name = f"{stem}-{i:05d}-of-00002.{ext}"
        shard = {k: sd[k] for k in part}
        save_file(shard, out / name, metadata={"format": "pt"}) if safetensors else torch.save(shard, out / name)
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in sd.values())
    (out / index).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def write_generation_config(out: Path) -> None:
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "transformers_version": "4.31.0"}, indent=2))


def write_preprocessor(out: Path, side: int) -> None:
    """The slow CLIPImageProcessor's config, as openai/clip-vit-large-patch14-336 ships it."""
    (out / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "CLIPImageProcessor", "feature_extractor_type": "CLIPFeatureExtractor",
         "do_resize": True, "size": {"shortest_edge": side}, "resample": 3, "do_center_crop": True,
         "crop_size": {"height": side, "width": side}, "do_rescale": True, "rescale_factor": 1 / 255,
         "do_normalize": True, "image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD,
         "do_convert_rgb": True}, indent=2))


def tiny_clip(image_size: int, seed: int) -> tuple[CLIPConfig, CLIPModel]:
    torch.manual_seed(seed)
    config = CLIPConfig(vision_config=dict(TOWER, image_size=image_size),
                        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, vocab_size=64, max_position_embeddings=16,
                                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
                        projection_dim=TOWER["projection_dim"])
    return config, CLIPModel(config)


def write_openai_clip(out: Path, image_size: int, seed: int) -> dict[str, torch.Tensor]:
    """A full CLIPModel folder (vision + text towers, projections, logit scale) in the original
    key layout (`vision_model.…`, `text_model.…`), pytorch_model.bin; returns the vision weights."""
    out.mkdir(parents=True, exist_ok=True)
    config, clip = tiny_clip(image_size, seed)
    sd = {k: v.detach().contiguous() for k, v in clip.state_dict().items()}
    torch.save(sd, out / "pytorch_model.bin")
    (out / "config.json").write_text(config.to_json_string())
    write_preprocessor(out, image_size)
    return {k[len("vision_model."):]: v for k, v in sd.items() if k.startswith("vision_model.")}


def write_vision_tower(out: Path, image_size: int, seed: int) -> None:
    """A CLIPVisionModel folder (`vision_model.…` keys, pytorch_model.bin), as a project that
    pre-trains its own ViT saves it."""
    out.mkdir(parents=True, exist_ok=True)
    config, clip = tiny_clip(image_size, seed)
    torch.save({f"vision_model.{k}": v.detach().contiguous() for k, v in clip.vision_model.state_dict().items()},
               out / "pytorch_model.bin")
    (out / "config.json").write_text(config.vision_config.to_json_string())
    write_preprocessor(out, image_size)


def write_tiny_geochat(out_dir: str | Path, seed: int = 0) -> dict:
    """GeoChat-7B's layout: CLIP ViT/14 at 336 px (separate, named by a Hub id), its position grid
    extended to 504 px inside the checkpoint; fp16 .bin shards. Returns the two folders."""
    root = Path(out_dir)
    ckpt, tower = root / "geochat-7B-tiny", root / "clip-vit-patch14-336"
    ckpt.mkdir(parents=True, exist_ok=True)
    vision = write_openai_clip(tower, 336, seed + 1)
    vocab = write_original_tokenizer(ckpt)
    cfg = original_config(vocab, "fusionrs-tiny/clip-vit-patch14-336", "GeoChatLlamaForCausalLM", "geochat")
    sd = llm_state_dict(cfg, seed, torch.float16)
    # transformers 4.31 saved the rotary buffers; the converter must drop them.
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    for i in range(cfg["num_hidden_layers"]):
        sd[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
    # The tower as GeoChat saved it after load_model(): grid interpolated to 504 px, fp16.
    extended = dict(vision)
    extended["embeddings.position_embedding.weight"] = geochat_interpolate(
        vision["embeddings.position_embedding.weight"], 504, TOWER["patch_size"])
    sd.update({f"model.vision_tower.vision_tower.vision_model.{k}": v.to(torch.float16) for k, v in extended.items()})
    write_shards(ckpt, sd, safetensors=False)
    (ckpt / "config.json").write_text(json.dumps(cfg, indent=2))
    write_generation_config(ckpt)
    return {"checkpoint": str(ckpt), "vision_tower": str(tower)}


def write_tiny_h2rsvlm(out_dir: str | Path, seed: int = 0, image_size: int = 56) -> dict:
    """H2RSVLM / VHM's layout: LLM + projector only (fp32 safetensors shards), its own pre-trained
    CLIPVisionModel folder named by absolute path in `mm_vision_tower`. Returns the two folders."""
    root = Path(out_dir)
    ckpt, tower = root / "vhm-7b-tiny", root / "vhm-vit-tiny"
    ckpt.mkdir(parents=True, exist_ok=True)
    write_vision_tower(tower, image_size, seed + 1)
    vocab = write_original_tokenizer(ckpt)
    cfg = original_config(vocab, str(tower.resolve()), "LlavaLlamaForCausalLM", "llava")
    cfg["torch_dtype"] = "float32"
    write_shards(ckpt, llm_state_dict(cfg, seed, torch.float32), safetensors=True)
    (ckpt / "config.json").write_text(json.dumps(cfg, indent=2))
    write_generation_config(ckpt)
    return {"checkpoint": str(ckpt), "vision_tower": str(tower)}
