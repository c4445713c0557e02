"""VLM instruction rows from the build's triplets (the dataset seam): the IR-aware subset of a
split, expanded into (IR image, instruction, response) rows by instructions.py. Training and
evaluation read exactly these rows."""

from __future__ import annotations

import functools

import ray

from fusionrs.core.storage import Storage
from fusionrs.dataset.load import read_dataset
from fusionrs.dataset.schema import IR_CAPTION_ACCEPTED
from fusionrs.train.vlm.instructions import instruction_rows

INSTRUCTION_COLUMNS = ["sample_id", "source", "split", "caption", "ir_aware_caption", "ir_caption_status",
                       "class_name", "ir_jpeg", "is_eval_representative"]


def in_ir_aware_subset(row: dict, split: str, eval_only: bool) -> bool:
    """A row of `split` with an accepted IR-aware caption (one per group when eval_only)."""
    if row["split"] != split or row["ir_caption_status"] != IR_CAPTION_ACCEPTED:
        return False
    return bool(row["is_eval_representative"]) or not eval_only


def ir_aware_rows(output: str, split: str, storage: Storage, eval_only: bool = False, images: bool = True,
                  shuffle_seed: int | None = None) -> ray.data.Dataset:
    """Triplet rows of the IR-aware subset. `images=False` leaves the JPEG column unread."""
    columns = INSTRUCTION_COLUMNS if images else [c for c in INSTRUCTION_COLUMNS if c != "ir_jpeg"]
    ds = read_dataset(output, columns, storage, shuffle_seed)
    return ds.filter(functools.partial(in_ir_aware_subset, split=split, eval_only=eval_only))


def instruction_dataset(output: str, split: str, setting: str, tasks, storage: Storage, eval_only: bool = False,
                        images: bool = True, shuffle_seed: int | None = None) -> ray.data.Dataset:
    """Instruction rows (sample_id, source, setting, task, instruction, response[, ir_jpeg])."""
    ds = ir_aware_rows(output, split, storage, eval_only, images, shuffle_seed)
    return ds.map_batches(instruction_rows, fn_kwargs={"setting": setting, "tasks": tuple(tasks)},
                          batch_format="numpy", batch_size=64)
