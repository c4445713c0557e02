"""VLM instruction rows from the build's triplets (the dataset seam): the IR-aware subset of a
split, expanded into (IR image, instruction, response) rows by instructions.py — with the RGB
image too for `inputs: rgb+ir`. Training and evaluation read exactly these rows."""

from __future__ import annotations

import ray
from ray.data.expressions import col

from fusionrs.core.storage import Storage
from fusionrs.dataset.load import read_dataset
from fusionrs.dataset.schema import IR_CAPTION_ACCEPTED
from fusionrs.train.vlm.instructions import instruction_rows

INSTRUCTION_COLUMNS = ["sample_id", "source", "split", "caption", "ir_aware_caption", "ir_caption_status",
                       "class_name", "ir_jpeg", "is_eval_representative"]


def ir_aware_filter(split: str, eval_only: bool):
    """Rows of `split` with an accepted IR-aware caption (one per joint group when eval_only), as
    a Ray Data expression (evaluated by Arrow)."""
    keep = (col("split") == split) & (col("ir_caption_status") == IR_CAPTION_ACCEPTED)
    return keep & (col("is_eval_representative") == True) if eval_only else keep  # noqa: E712


def image_columns(inputs: str) -> list[str]:
    return ["rgb_jpeg", "ir_jpeg"] if inputs == "rgb+ir" else ["ir_jpeg"]


def ir_aware_rows(output: str, split: str, storage: Storage, eval_only: bool = False, images: bool = True,
                  shuffle_seed: int | None = None, inputs: str = "ir") -> ray.data.Dataset:
    """Triplet rows of the IR-aware subset. `images=False` leaves the JPEG columns unread."""
    columns = [c for c in INSTRUCTION_COLUMNS if c != "ir_jpeg"] + (image_columns(inputs) if images else [])
    ds = read_dataset(output, columns, storage, shuffle_seed)
    return ds.filter(expr=ir_aware_filter(split, eval_only))


def instruction_dataset(output: str, split: str, setting: str, tasks, storage: Storage, eval_only: bool = False,
                        images: bool = True, shuffle_seed: int | None = None, inputs: str = "ir") -> ray.data.Dataset:
    """Instruction rows (sample_id, source, setting, task, instruction, response[, rgb_jpeg][, ir_jpeg])."""
    ds = ir_aware_rows(output, split, storage, eval_only, images, shuffle_seed, inputs)
    return ds.map_batches(instruction_rows, fn_kwargs={"setting": setting, "tasks": tuple(tasks), "inputs": inputs},
                          batch_format="numpy", batch_size=64)
