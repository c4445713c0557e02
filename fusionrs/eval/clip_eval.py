"""Retrieval evaluation of a CLIP checkpoint on a build's val/test split.

Embeddings come from a Ray Data pass (an actor pool: GPU actors on a cluster, CPU here); the
metrics are computed in the driver: six directions, both means, per source, and zero-shot IR
scene classification where class names exist. Written as retrieval.json and a Markdown table.
"""

from __future__ import annotations

import io
import json

import numpy as np
import torch
from PIL import Image
from ray.data import ActorPoolStrategy

from fusionrs.core.storage import Storage, join
from fusionrs.eval.retrieval import markdown_table, per_source, retrieval_examples, six_directions
from fusionrs.train.clip.data import clip_rows, preprocessed
from fusionrs.train.clip.model import create_clip

ZERO_SHOT_TEMPLATES = ("a thermal infrared image of a {} scene", "an infrared image of {}", "a low light thermal view of {}")


class Embedder:
    """Ray Data actor: the model loads once per actor."""

    def __init__(self, model: str, pretrained: str, config_json: str, quick_gelu: bool = False):
        self.net, _, _ = create_clip(model, pretrained, config_json, quick_gelu)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.net.to(self.device).eval()

    def __call__(self, batch: dict) -> dict:
        with torch.no_grad():
            out = {k: self.net.encode_image(torch.as_tensor(batch[k], device=self.device)).float().cpu().numpy()
                   for k in ("rgb", "ir")}
            out["text"] = self.net.encode_text(torch.as_tensor(batch["text"], device=self.device)).float().cpu().numpy()
        return {**out, **{k: batch[k] for k in ("sample_id", "caption_key", "source", "class_name")}}


def zero_shot(net_args: tuple, ir: np.ndarray, classes: list[str]) -> dict | None:
    names = sorted({c for c in classes if c})
    if len(names) < 2:
        return None
    net, _, tok = create_clip(*net_args)
    net.eval()
    with torch.no_grad():
        cls_emb = []
        for n in names:
            label = n.replace("_", " ").replace("-", " ")
            e = torch.nn.functional.normalize(net.encode_text(tok([t.format(label) for t in ZERO_SHOT_TEMPLATES])), dim=-1).mean(0)
            cls_emb.append(torch.nn.functional.normalize(e, dim=-1))
    rows = [i for i, c in enumerate(classes) if c]
    sims = torch.nn.functional.normalize(torch.as_tensor(ir[rows]), dim=-1) @ torch.stack(cls_emb).T
    truth = torch.tensor([names.index(classes[i]) for i in rows])
    top = sims.topk(min(5, len(names)), dim=1).indices
    return {"classes": len(names), "images": len(rows), "top1": float((top[:, 0] == truth).float().mean() * 100),
            "top5": float((top == truth[:, None]).any(1).float().mean() * 100)}


def embed_split(data: str, split: str, model: str, pretrained: str, config_json: str = "", quick_gelu: bool = False,
                storage=None, actors: int = 1, num_gpus: float = 0.0, batch_size: int = 64) -> dict:
    """RGB, IR and text embeddings of a split's evaluation rows (one per joint group), with
    their ids, caption keys, sources and class names: a Ray Data pass over an actor pool."""
    storage = storage or Storage.from_env()
    _, preprocess, tokenizer = create_clip(model, pretrained, config_json, quick_gelu)
    ds = preprocessed(clip_rows(data, split, "580k-only", storage, eval_only=True), preprocess, tokenizer)
    ds = ds.map_batches(Embedder, fn_constructor_kwargs=dict(model=model, pretrained=pretrained, config_json=config_json,
                                                             quick_gelu=quick_gelu),
                        batch_size=batch_size, compute=ActorPoolStrategy(min_size=1, max_size=actors),
                        num_gpus=num_gpus or None, batch_format="numpy")
    parts = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    if not parts:
        raise ValueError(f"no {split} rows in {data}")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def evaluate_clip(data: str, split: str, model: str, pretrained: str, config_json: str = "", quick_gelu: bool = False,
                  storage=None, actors: int = 1, num_gpus: float = 0.0, batch_size: int = 64,
                  embeddings: dict | None = None) -> dict:
    """Six-direction retrieval (overall and per source) and zero-shot IR scene classification.
    `embeddings`: embed_split's output when the caller already has it."""
    cols = embeddings or embed_split(data, split, model, pretrained, config_json, quick_gelu, storage, actors,
                                     num_gpus, batch_size)
    emb = {k: cols[k] for k in ("rgb", "ir", "text")}
    ids, keys, sources = list(cols["sample_id"]), list(cols["caption_key"]), list(cols["source"])
    result = {"split": split, "rows": len(ids), "model": model, "pretrained": pretrained,
              "overall": six_directions(emb, ids, keys), "per_source": per_source(emb, ids, keys, sources),
              "examples": retrieval_examples(emb, ids, keys)}
    zs = zero_shot((model, pretrained, config_json, quick_gelu), emb["ir"], list(cols["class_name"]))
    if zs:
        result["zero_shot_ir"] = zs
    return result


class ImageEmbedder:
    """Ray Data actor for benchmark images outside a build (HIT-UAV, Caltech): JPEG or PNG bytes
    in `image`, decoded and preprocessed here, next to the model; `embedding` out."""

    def __init__(self, model: str, pretrained: str, config_json: str, quick_gelu: bool = False):
        self.net, self.preprocess, _ = create_clip(model, pretrained, config_json, quick_gelu)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.net.to(self.device).eval()

    def __call__(self, batch: dict) -> dict:
        pixels = torch.stack([self.preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in batch["image"]])
        with torch.no_grad():
            emb = self.net.encode_image(pixels.to(self.device)).float().cpu().numpy()
        return {**{k: v for k, v in batch.items() if k != "image"}, "embedding": emb}


def write_results(results: dict[str, dict], out_dir: str, storage=None) -> None:
    """retrieval.json and retrieval.md (paper Table 4 layout, plus per source); the queries with
    their top 5 (for the HTML report) apart, in retrieval_examples.json."""
    storage = storage or Storage.from_env()
    examples = {name: {"split": r["split"], "k": 5, "examples": r["examples"]}
                for name, r in results.items() if r.get("examples")}
    results = {name: {k: v for k, v in r.items() if k != "examples"} for name, r in results.items()}
    storage.write_text(join(out_dir, "retrieval.json"), json.dumps(results, indent=1, sort_keys=True))
    if examples:
        storage.write_text(join(out_dir, "retrieval_examples.json"), json.dumps(examples, indent=1, sort_keys=True))
    md = [markdown_table({name: r["overall"] for name, r in results.items()}, "Retrieval (R@1/5/10, %)")]
    for name, r in results.items():
        if r["per_source"]:
            md.append(markdown_table(r["per_source"], f"{name}: per source"))
        if "zero_shot_ir" in r:
            z = r["zero_shot_ir"]
            md.append(f"{name}: zero-shot IR scene classification over {z['classes']} classes, {z['images']} images: "
                      f"top-1 {z['top1']:.2f}%, top-5 {z['top5']:.2f}%")
    storage.write_text(join(out_dir, "retrieval.md"), "\n\n".join(md) + "\n")
