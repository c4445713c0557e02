"""CLIP training and evaluation rows from the build's triplets (the dataset seam), preprocessed
in Ray Data on CPU workers (JPEG decode, open_clip transforms, tokenization) and streamed to the
trainers or the evaluation actors."""

from __future__ import annotations

import functools
import io

import numpy as np
import ray
from PIL import Image
from ray.data.expressions import col

from fusionrs.core.storage import Storage
from fusionrs.dataset.load import read_dataset
from fusionrs.dataset.schema import IR_CAPTION_ACCEPTED

COLUMNS = ["sample_id", "source", "split", "caption", "normalized_caption_key", "ir_aware_caption",
           "ir_caption_status", "rgb_jpeg", "ir_jpeg", "class_name", "is_eval_representative"]
FILTER_COLUMNS = ["split", "ir_caption_status", "is_eval_representative"]
IR_AWARE_SETTINGS = ("A-original", "B-iraware", "C-mixed")  # IR-aware fine-tuning: the accepted subset


def row_filter(split: str, setting: str, eval_only: bool = False):
    """The rows a setting uses, as a Ray Data expression (evaluated by Arrow, not per Python row):
    the split; one row per joint group for evaluation (as the official protocol); the accepted
    IR-aware captions for the IR-aware fine-tuning settings."""
    keep = col("split") == split
    if eval_only:
        keep = keep & (col("is_eval_representative") == True)  # noqa: E712 - an Arrow expression
    if setting in IR_AWARE_SETTINGS:
        keep = keep & (col("ir_caption_status") == IR_CAPTION_ACCEPTED)
    return keep


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


def clip_rows(output: str, split: str, setting: str, storage: Storage, eval_only: bool = False,
              columns: list[str] = COLUMNS, shuffle_seed: int | None = None) -> ray.data.Dataset:
    """The rows of `split` that `setting` trains or evaluates on, unprocessed (JPEG bytes)."""
    ds = read_dataset(output, columns, storage, shuffle_seed)
    return ds.filter(expr=row_filter(split, setting, eval_only))


def preprocessed(ds: ray.data.Dataset, preprocess, tokenizer, batch_size: int = 64) -> ray.data.Dataset:
    return ds.map_batches(functools.partial(preprocess_batch, preprocess=preprocess, tokenizer=tokenizer),
                          batch_size=batch_size, batch_format="numpy")


def count_rows(output: str, split: str, setting: str, storage: Storage, eval_only: bool = False) -> int:
    """The rows clip_rows yields, counted from three small columns (no image is read)."""
    return clip_rows(output, split, setting, storage, eval_only, columns=FILTER_COLUMNS).count()


def collect(ds: ray.data.Dataset) -> dict[str, np.ndarray]:
    parts = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
