"""`translate.prompt_caption=blip`: upstream DiffV2IR prompts with a BLIP caption of the RGB
image. transformers' BLIP captioning model from a local folder, greedy decoding (one beam, no
sampling), so a sample's prompt — and with its per-sample seed, its IR image — is reproducible.
The default stays the cleaned original caption (docs/translate.md says why)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


class BlipCaptioner:
    def __init__(self, path: str, max_new_tokens: int = 30, batch_size: int = 16):
        import torch
        from transformers import AutoProcessor, BlipForConditionalGeneration

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.processor = AutoProcessor.from_pretrained(path)
        self.model = BlipForConditionalGeneration.from_pretrained(path).to(self.device).eval()
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def __call__(self, images: list[Image.Image]) -> list[str]:
        import torch

        out: list[str] = []
        for s in range(0, len(images), self.batch_size):
            enc = self.processor(images=[im.convert("RGB") for im in images[s:s + self.batch_size]],
                                 return_tensors="pt").to(self.device)
            with torch.no_grad():
                ids = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
            out += [" ".join(t.split()) for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
        return out


TINY_WORDS = ("a an the of with and in on near aerial view image river road roads trees forest buildings houses "
              "field fields farmland runway airport lake sea beach port ships bridge parking lot residential area").split()


def write_tiny_blip(out_dir: str | Path, seed: int = 0) -> str:
    """A tiny random BLIP captioner in Hugging Face format (WordPiece tokenizer built here)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

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
