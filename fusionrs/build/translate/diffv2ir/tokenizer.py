"""The CLIP tokenizer without the hub: open_clip ships the same BPE vocabulary as
openai/clip-vit-large-patch14, so we write the HF `vocab.json` + `merges.txt` from it."""

from __future__ import annotations

import json
from pathlib import Path

from open_clip.tokenizer import SimpleTokenizer
from transformers import CLIPTokenizer


def write_clip_tokenizer(out_dir: str | Path):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = SimpleTokenizer()
    # open_clip names the special tokens <start_of_text>/<end_of_text>; HF, <|startoftext|>/<|endoftext|>.
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {rename.get(k, k): v for k, v in t.encoder.items()}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    merges = sorted(t.bpe_ranks.items(), key=lambda kv: kv[1])
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for (a, b), _ in merges), encoding="utf-8")
    tok = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), pad_token="<|endoftext|>", model_max_length=77)
    tok.save_pretrained(str(out))
    return tok
