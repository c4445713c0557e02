"""The driver's plan: joint groups → split → IR-aware caption subset, from ids and hashes only.

Runs after translation, over the rows that were usable at ingest and translated: the IR
images' SHA-256 and pHash are edges of the joint groups (official implementation §3.2), and
split targets and evaluation representatives count only rows that will be triplets. Also the
core of `fusionrs plan` (plan_cli.py), which feeds it metadata instead of a build's stage files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from fusionrs.build.dedup import group_samples
from fusionrs.build.split import assign_splits, cross_split_groups, select_subset
from fusionrs.config.build import BuildConfig
from fusionrs.core.storage import Storage
from fusionrs.dataset.layout import Layout
from fusionrs.dataset.schema import IR_OK

INGEST_PLAN_COLUMNS = ["sample_id", "source", "rgb_phash", "rgb_sha256", "caption_key", "reject_reason"]
IR_PLAN_COLUMNS = ["sample_id", "ir_status", "ir_sha256", "ir_phash"]


@dataclass
class PlanInput:
    """One row per planned sample (usable and translated), aligned lists."""

    sample_id: list[str]
    source: list[str]
    rgb_phash: list[str]
    rgb_sha256: list[str]
    caption_key: list[str | None]
    ir_phash: list[str] | None = None
    ir_sha256: list[str] | None = None
    part_index: np.ndarray | None = None  # the build's part of each row


@dataclass
class Plan:
    split: list[str]
    group_id: list[str]
    group_size: np.ndarray
    eval_rep: list[bool]
    iraware: list[bool]
    summary: dict


def make_plan(rows: PlanInput, cfg: BuildConfig) -> Plan:
    grouping = group_samples(rows.sample_id, rows.rgb_phash, rows.rgb_sha256, rows.caption_key,
                             cfg.dedup.near_radius, cfg.dedup.caption_groups, rows.ir_phash, rows.ir_sha256)
    split = assign_splits(rows.sample_id, rows.source, grouping.group_id, cfg.split)
    crossing = cross_split_groups(grouping.group_id, split.split)
    if crossing:  # cannot happen by construction; refuse to write a leaky split
        raise RuntimeError(f"{crossing} groups cross splits")
    chosen = select_subset(rows.sample_id, rows.source, split.split, cfg.subset)
    summary = {"dedup": grouping.stats, "split_targets": split.targets, "split_achieved": split.achieved,
               "split_shortfalls": split.shortfalls, "cross_split_groups": crossing,
               "iraware_selected": int(sum(chosen))}
    return Plan(split.split, grouping.group_id, grouping.group_size, split.is_eval_representative, chosen, summary)


def read_plan_input(cfg: BuildConfig, storage: Storage, fps: dict, parts: list[str],
                    tombstoned: frozenset = frozenset()) -> tuple[PlanInput, int]:
    """The plan's columns of every part's ingest and IR files, less taken-down samples. Returns
    the rows and how many duplicate sample_ids were left out (the same record listed twice: its
    first row is kept)."""
    layout = Layout(cfg.output)
    fs, _ = storage.resolve(cfg.output)

    def table(paths: list[str], columns: list[str]) -> tuple[pa.Table, np.ndarray]:
        local = [storage.resolve(p)[1] for p in paths]
        counts = [pads.dataset(p, filesystem=fs, format="parquet").count_rows() for p in local]
        t = pads.dataset(local, filesystem=fs, format="parquet").to_table(columns=columns)
        return t, np.repeat(np.arange(len(paths)), counts)

    ing, ing_part = table([layout.ingest(fps["ingest"], p) for p in parts], INGEST_PLAN_COLUMNS)
    ir, ir_part = table([layout.ir(fps["translate"], p) for p in parts], IR_PLAN_COLUMNS)
    ok_ir = np.asarray(pc.equal(ir.column("ir_status"), IR_OK).fill_null(False))
    ir_hashes = {(int(k), s): (h, p) for k, s, h, p in zip(
        ir_part[ok_ir], ir.column("sample_id").filter(ok_ir).to_pylist(),
        ir.column("ir_sha256").filter(ok_ir).to_pylist(), ir.column("ir_phash").filter(ok_ir).to_pylist())}
    usable = np.asarray(ing.column("reject_reason").is_null())
    t, part_of = ing.filter(pa.array(usable)), ing_part[usable]
    sids = t.column("sample_id").to_pylist()
    keep, seen, duplicates = [], set(), 0
    for i, (k, s) in enumerate(zip(part_of, sids)):
        if (int(k), s) not in ir_hashes or s in tombstoned:
            continue  # translation failed (a reject), or taken down: in no group and no count
        if s in seen:
            duplicates += 1  # the same record listed twice: its first row is planned
            continue
        seen.add(s)
        keep.append(i)
    t, part_of = t.take(keep), part_of[keep]
    sids = [sids[i] for i in keep]
    ir_sha, ir_ph = zip(*(ir_hashes[(int(k), s)] for k, s in zip(part_of, sids))) if sids else ((), ())
    return PlanInput(sids, t.column("source").to_pylist(), t.column("rgb_phash").to_pylist(),
                     t.column("rgb_sha256").to_pylist(), t.column("caption_key").to_pylist(),
                     list(ir_ph), list(ir_sha), part_of), duplicates


def assignments_by_part(rows: PlanInput, plan: Plan, parts: list[str]) -> dict[str, dict]:
    per_part: dict[str, dict] = {p: {} for p in parts}
    for i, sid in enumerate(rows.sample_id):
        per_part[parts[rows.part_index[i]]][sid] = {
            "split": plan.split[i], "group": plan.group_id[i], "group_size": int(plan.group_size[i]),
            "eval_rep": bool(plan.eval_rep[i]), "iraware": bool(plan.iraware[i])}
    return per_part
