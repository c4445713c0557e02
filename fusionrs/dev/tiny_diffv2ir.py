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
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    create_unet_diffusers_config_from_ldm,
    create_vae_diffusers_config_from_ldm,
)
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    BertTokenizerFast,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    SamConfig,
    SamImageProcessor,
    SamModel,
    SamProcessor,
)

from fusionrs.build.translate.diffv2ir.configs import tiny_generate_config
from fusionrs.build.translate.diffv2ir.ldm_keys import ema_key, unet_to_ldm, vae_to_ldm


def build_tiny_components(seed: int = 0):
    """The tiny model as diffusers modules (random weights, every tensor non-zero)."""
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


def write_tiny_sam(out_dir, seed: int = 0) -> str:
    """A tiny random SAM in Hugging Face format (64 px), to smoke-test `translate.seg=sam`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = SamConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, output_channels=16, image_size=64,
                           patch_size=8, mlp_dim=64, window_size=0, global_attn_indexes=[1], num_pos_feats=8),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32,
                                 iou_head_hidden_dim=16))
    torch.manual_seed(seed)
    SamModel(config).save_pretrained(out)
    SamProcessor(SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})).save_pretrained(out)
    return str(out)


TINY_WORDS = ("a an the of with and in on near aerial view image river road roads trees forest buildings houses "
              "field fields farmland runway airport lake sea beach port ships bridge parking lot residential area").split()


def write_tiny_blip(out_dir: str | Path, seed: int = 0) -> str:
    """A tiny random BLIP captioner in Hugging Face format (WordPiece tokenizer built here)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    vocab = specials + sorted(set(TINY_WORDS)) + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", bos_token="[DEC]")
    config = BlipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, bos_token_id=5, pad_token_id=0,
                         sep_token_id=3, eos_token_id=3),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=32)
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(out)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 64, "width": 64}), tokenizer=tokenizer).save_pretrained(out)
    return str(out)
