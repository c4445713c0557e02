"""The driver's plan: joint groups → split → IR-aware caption subset, from ids and hashes only.

Runs after translation, over the rows that were usable at ingest and translated: the IR
images' SHA-256 and pHash are edges of the joint groups (official implementation §3.2), and
split targets and evaluation representatives count only rows that will be triplets. Also the
core of `fusionrs plan` (plan_cli.py), which feeds it metadata instead of a build's stage files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fusionrs.build.dedup import group_samples, phash_values
from fusionrs.build.split import assign_splits, cross_split_groups, select_subset
from fusionrs.config.build import BuildConfig
from fusionrs.core.storage import Storage
from fusionrs.dataset.layout import Layout
from fusionrs.dataset.schema import IR_OK

INGEST_PLAN_COLUMNS = ["sample_id", "source", "rgb_phash", "rgb_sha256", "caption_key", "reject_reason"]
IR_PLAN_COLUMNS = ["sample_id", "ir_status", "ir_sha256", "ir_phash"]
# What read_plan_input keeps of a part: the planned rows' ingest columns, then their IR hashes.
PLANNED_SCHEMA = pa.schema([(c, pa.string()) for c in ("sample_id", "source", "rgb_phash", "rgb_sha256", "caption_key",
                                                        "ir_phash", "ir_sha256")])


@dataclass
class PlanInput:
    """One row per planned sample (usable and translated), aligned columns. The hashes and keys
    are lists of strings (tests, the synthetic plan) or, from read_plan_input, compact arrays:
    pHash as uint64, SHA-256 and caption keys as equality codes (dedup.equality_codes: equal
    value, equal code; -1 none), so that 100K rows cost a few MiB, not Python strings."""

    sample_id: list[str]
    source: list[str]
    rgb_phash: list[str] | np.ndarray
    rgb_sha256: list[str] | np.ndarray
    caption_key: list[str | None] | np.ndarray
    ir_phash: list[str] | np.ndarray | None = None
    ir_sha256: list[str] | np.ndarray | None = None
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
    first row is kept).

    One part at a time, each made compact at once (PlanInput's arrays): a dataset over every
    stage file holds each file's footer for the whole scan, and the rows as Python strings cost
    ~300 MiB at 100K rows."""
    layout = Layout(cfg.output)
    acc = _Compact()
    for k, part in enumerate(parts):
        acc.add(k, _planned_rows(storage.read_parquet(layout.ingest(fps["ingest"], part), INGEST_PLAN_COLUMNS),
                                 storage.read_parquet(layout.ir(fps["translate"], part), IR_PLAN_COLUMNS), tombstoned))
    return acc.rows()


class _Compact:
    """The planned rows gathered part by part: sample_ids and sources as Python lists (the plan
    needs them as strings; a source's name is one shared object), pHashes as uint64, and the
    SHA-256 and caption keys as 32-byte digests (_digests) until all are read, then codes."""

    def __init__(self):
        self.sample_id: list[str] = []
        self.source: list[str] = []
        self.names: dict[str, str] = {}
        self.part: list[np.ndarray] = [np.zeros(0, np.int64)]
        self.phash: dict[str, list[np.ndarray]] = {c: [np.zeros(0, np.uint64)] for c in ("rgb_phash", "ir_phash")}
        self.keys: dict[str, list[np.ndarray]] = {c: [np.zeros(0, "S32")] for c in ("rgb_sha256", "caption_key",
                                                                                   "ir_sha256")}

    def add(self, k: int, t: pa.Table) -> None:
        self.sample_id += t.column("sample_id").to_pylist()
        self.source += [self.names.setdefault(s, s) for s in t.column("source").to_pylist()]
        self.part.append(np.full(t.num_rows, k, dtype=np.int64))
        for c, arrays in self.phash.items():
            arrays.append(phash_values(t.column(c).to_pylist()))
        for c, arrays in self.keys.items():
            arrays.append(_digests(t.column(c).to_pylist()))

    def rows(self) -> tuple[PlanInput, int]:
        first = _first_rows(self.sample_id)
        duplicates = len(self.sample_id) - len(first)
        keep = np.array(first, dtype=np.int64)

        def kept(arrays: list[np.ndarray]) -> np.ndarray:
            a = np.concatenate(arrays)
            return a[keep] if duplicates else a

        def codes(c: str) -> np.ndarray:
            digests = kept(self.keys[c])
            out = np.unique(digests, return_inverse=True)[1].reshape(-1).astype(np.int64)
            out[digests == b""] = -1  # no key
            return out

        sids, sources = self.sample_id, self.source
        if duplicates:
            sids, sources = [sids[i] for i in first], [sources[i] for i in first]
        return PlanInput(sids, sources, kept(self.phash["rgb_phash"]), codes("rgb_sha256"), codes("caption_key"),
                         kept(self.phash["ir_phash"]), codes("ir_sha256"), kept(self.part)), duplicates


def _digests(keys: list[str | None]) -> np.ndarray:
    """Keys as fixed-width 32-byte values for equality: SHA-256 of the key (itself a SHA-256 hex
    digest in a build; hashing again keeps any string exact, bar a SHA-256 collision, where a
    64-bit hash would merge unrelated groups once in a few billion builds). None: b"" (no key)."""
    return np.array([b"" if k is None else hashlib.sha256(k.encode("utf-8", "surrogatepass")).digest() for k in keys],
                    dtype="S32")


def _planned_rows(ing: pa.Table, ir: pa.Table, tombstoned: frozenset) -> pa.Table:
    """One part's usable ingest rows whose translation succeeded, less taken-down samples, in
    ingest order, with their IR hashes (a row listed twice in the IR file: its last row's)."""
    ok = ir.filter(pc.equal(ir.column("ir_status"), IR_OK).fill_null(False))
    ir_row = {s: j for j, s in enumerate(ok.column("sample_id").to_pylist())}
    usable = ing.filter(ing.column("reject_reason").is_null())
    pairs = [(i, ir_row[s]) for i, s in enumerate(usable.column("sample_id").to_pylist())
             if s in ir_row and s not in tombstoned]  # else a reject (translation failed), or taken down
    rows = usable.take(pa.array([i for i, _ in pairs], pa.int64()))
    hashes = ok.take(pa.array([j for _, j in pairs], pa.int64()))
    cols = [rows.column(c) for c in PLANNED_SCHEMA.names[:5]] + [hashes.column(c) for c in PLANNED_SCHEMA.names[5:]]
    return pa.table([c.cast(pa.string()) for c in cols], schema=PLANNED_SCHEMA)  # an all-null column may be untyped


def _first_rows(sample_ids: list[str]) -> list[int]:
    """The index of each sample_id's first row (the same record listed twice: its first row is planned)."""
    seen: set[str] = set()
    first = []
    for i, s in enumerate(sample_ids):
        if s not in seen:
            seen.add(s)
            first.append(i)
    return first


def assignments_by_part(rows: PlanInput, plan: Plan, parts: list[str]) -> dict[str, dict]:
    per_part: dict[str, dict] = {p: {} for p in parts}
    for i, sid in enumerate(rows.sample_id):
        per_part[parts[rows.part_index[i]]][sid] = {
            "split": plan.split[i], "group": plan.group_id[i], "group_size": int(plan.group_size[i]),
            "eval_rep": bool(plan.eval_rep[i]), "iraware": bool(plan.iraware[i])}
    return per_part
