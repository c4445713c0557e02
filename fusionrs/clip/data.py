"""Training and evaluation rows from the build's Parquet, preprocessed in Ray Data on CPU
workers (JPEG decode, open_clip transforms, tokenization), streamed to the trainers."""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image

COLUMNS = ["sample_id", "source", "split", "caption", "normalized_caption_key", "ir_aware_caption",
           "ir_caption_status", "rgb_jpeg", "ir_jpeg", "class_name", "is_eval_representative"]


def keep_row(row: dict, split: str, setting: str, eval_only: bool = False) -> bool:
    if row["split"] != split:
        return False
    if eval_only and not row["is_eval_representative"]:
        return False  # one row per group in val/test, as the official protocol
    if setting in ("A-original", "B-iraware", "C-mixed"):
        return row["ir_caption_status"] == "accepted"  # IR-aware fine-tuning rows
    return True


def preprocess_batch(batch: dict, preprocess, tokenizer) -> dict:
    """Pixels (float32 N×3×H×W) for RGB and IR, tokens (int64 N×77) for both captions."""
    def pixels(col):
        return np.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")).numpy() for b in batch[col]])

    ir_caps = [c if isinstance(c, str) and c else "" for c in batch["ir_aware_caption"]]
    return {
        "rgb": pixels("rgb_jpeg"), "ir": pixels("ir_jpeg"),
        "text": tokenizer(list(batch["caption"])).numpy(), "text_ir": tokenizer(ir_caps).numpy(),
        "sample_id": np.asarray(batch["sample_id"]), "caption_key": np.asarray(
            [k or c for k, c in zip(batch["normalized_caption_key"], batch["caption"])]),
        "source": np.asarray(batch["source"]),
        "class_name": np.asarray([c or "" for c in batch["class_name"]]),
    }


def count_rows(triplets_uri: str, split: str, setting: str, storage, eval_only: bool = False) -> int:
    """The rows clip_dataset yields (it maps one to one), counted from three small columns rather
    than by decoding and preprocessing every image."""
    import ray

    fs, path = storage.resolve(triplets_uri)
    ds = ray.data.read_parquet(path, filesystem=fs, columns=["split", "ir_caption_status", "is_eval_representative"])
    return ds.filter(functools.partial(keep_row, split=split, setting=setting, eval_only=eval_only)).count()


def clip_dataset(triplets_uri: str, split: str, setting: str, preprocess, tokenizer, storage,
                 eval_only: bool = False, batch_size: int = 64):
    import ray

    fs, path = storage.resolve(triplets_uri)
    ds = ray.data.read_parquet(path, filesystem=fs, columns=COLUMNS)
    ds = ds.filter(functools.partial(keep_row, split=split, setting=setting, eval_only=eval_only))
    return ds.map_batches(functools.partial(preprocess_batch, preprocess=preprocess, tokenizer=tokenizer),
                          batch_size=batch_size, batch_format="numpy")
