"""`translate.prompt_caption=blip`: upstream DiffV2IR prompts with a BLIP caption of the RGB
image. transformers' BLIP captioning model from a local folder, greedy decoding (one beam, no
sampling), so a sample's prompt — and with its per-sample seed, its IR image — is reproducible.
The default stays the cleaned original caption (docs/translate.md says why)."""

from __future__ import annotations

import torch
from PIL import Image
from transformers import AutoProcessor, BlipForConditionalGeneration


class BlipCaptioner:
    def __init__(self, path: str, max_new_tokens: int = 30, batch_size: int = 16):
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.processor = AutoProcessor.from_pretrained(path)
        self.model = BlipForConditionalGeneration.from_pretrained(path).to(self.device).eval()
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def __call__(self, images: list[Image.Image]) -> list[str]:
        out: list[str] = []
        for s in range(0, len(images), self.batch_size):
            enc = self.processor(images=[im.convert("RGB") for im in images[s:s + self.batch_size]],
                                 return_tensors="pt").to(self.device)
            with torch.no_grad():
                ids = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
            out += [" ".join(t.split()) for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
        return out
