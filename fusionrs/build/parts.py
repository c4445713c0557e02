"""The per-shard workers of the build: plain callables over one unit or part, wired into Ray
Data by pipeline.py and run directly by tests and benchmarks.

Every worker reads its inputs from storage and writes one file named by the part and its
stage's fingerprint, atomically; what travels back through Ray is a small stats row (`stats`, a
JSON object the ledger sums: ledger.StageLedger.add). A part whose file already exists is
skipped, and its stats say what the earlier run spent on it (so the ledger can say what was
saved).
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import ray
from PIL import Image

from fusionrs.build.caption.ir_filter import ir_caption_status
from fusionrs.build.clean import CaptionCleaner
from fusionrs.build.ingest import ingest_unit
from fusionrs.build.readers import WorkUnit
from fusionrs.build.stages import make_captioner, make_translator
from fusionrs.config.build import BuildConfig
from fusionrs.config.loader import stable_hash
from fusionrs.core.images import phash64, phash_hex, sha256_hex
from fusionrs.core.storage import Storage
from fusionrs.dataset.layout import Layout
from fusionrs.dataset.schema import (
    CAPTION_RAW_OK,
    DUPLICATE_SAMPLE,
    IR_CAPTION_NOT_CAPTIONED,
    IR_CAPTION_NOT_SELECTED,
    IR_OK,
    REJECT_SCHEMA,
    STAGE_INGEST,
    STAGE_TRANSLATE,
    TRIPLET_SCHEMA,
)

IR_STAGE_SCHEMA = pa.schema([("sample_id", pa.string()), ("ir_jpeg", pa.binary()), ("ir_status", pa.string()),
                             ("ir_sha256", pa.string()), ("ir_phash", pa.string())])


def per_row(batch: dict, fn) -> dict:
    """Apply `fn` to each row of a Ray Data batch (batch_size=1 in the build: one unit / part)."""
    keys = list(batch)
    rows = [fn({k: _py(batch[k][i]) for k in keys}) for i in range(len(batch[keys[0]]))]
    return {k: [r[k] for r in rows] for k in rows[0]}


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


# ---------------------------------------------------------------------------------------
# Pass 1: ingest, one source unit → one or more ingest parts.


class IngestUnit:
    """Read, decode and validate, clean captions, hash. The caption cleaner (and its language
    model) loads once per worker process."""

    def __init__(self, cfg: BuildConfig, storage: Storage, fp: str):
        self.cfg, self.storage, self.fp = cfg, storage, fp
        self.layout = Layout(cfg.output)
        self.cleaner: CaptionCleaner | None = None

    def __call__(self, unit_row: dict) -> dict:
        unit = WorkUnit.from_row(unit_row)
        marker = self.layout.ingest_marker(self.fp, unit.unit_id)
        if self.storage.exists(marker):
            parts = json.loads(self.storage.read_bytes(marker))
            return {"unit_id": unit.unit_id, "parts": json.dumps(parts),
                    "stats": json.dumps({"units": 1, "skipped": 1, "rows": sum(p["rows"] for p in parts),
                                         "saved_s": sum(p.get("busy_s", 0.0) for p in parts)})}
        self.cleaner = self.cleaner or CaptionCleaner(self.cfg.clean)
        t0 = time.perf_counter()
        table = ingest_unit(unit, self.cfg, self.storage, self.cleaner)
        size = self.cfg.ingest.records_per_unit
        parts = []
        n_parts = max(1, -(-table.num_rows // size))
        for k in range(n_parts):
            part_id = unit.unit_id if n_parts == 1 and unit.format != "rs5m_wds" else f"{unit.unit_id}-p{k:03d}"
            self.storage.write_parquet(self.layout.ingest(self.fp, part_id), table.slice(k * size, size))
            parts.append({"part": part_id, "rows": min(size, table.num_rows - k * size)})
        busy = time.perf_counter() - t0
        for p in parts:  # recorded so that a rerun which skips this unit can say what it saved
            p["busy_s"] = round(busy / len(parts), 4)
        # The marker is written last: a unit without it is redone whole on the next run.
        self.storage.write_text(marker, json.dumps(parts))
        return {"unit_id": unit.unit_id, "parts": json.dumps(parts),
                "stats": json.dumps({"units": 1, "rows": table.num_rows, "busy_s": busy})}


# ---------------------------------------------------------------------------------------
# Pass 2: translate every usable row of a part (the split does not depend on it being done
# first; the plan does depend on the IR hashes, so translation comes before the plan).


class TranslatePart:
    """The translator loads once per actor. Each IR file records its seconds and the device and
    dtype it ran with (Parquet metadata), so a rerun that skips it can say what it saved. With a
    GPU budget (`cost.max_gpu_usd`) a shared keeper is asked before each part; past the cap the
    part is left untranslated (pending) and the run stops cleanly.

    A part goes to the translator in windows of WINDOW_BATCHES batches: a window groups more
    rows of one output size into full batches. While the GPU samples one window, a thread
    prepares the next (JPEG decode, geometry, segmentation maps: `translator.prepare`, where the
    translator has one) and hashes the previous window's IR images, so the UNet does not wait
    for the CPU."""

    WINDOW_BATCHES = 4

    def __init__(self, cfg: BuildConfig, storage: Storage, fps: dict, keeper=None):
        self.cfg, self.storage, self.fps = cfg, storage, fps
        self.translator = make_translator(cfg, storage)
        self.layout = Layout(cfg.output)
        self.keeper = keeper
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="translate-prefetch")

    def __call__(self, batch: dict) -> dict:
        return per_row(batch, self.one)

    def one(self, row: dict) -> dict:
        part = row["part"]
        out_uri = self.layout.ir(self.fps["translate"], part)
        if self.storage.exists(out_uri):
            meta = self.storage.parquet_metadata(out_uri)
            return {**row, "pending": False, "runtime": meta.get("fusionrs_runtime", "{}"),
                    "stats": json.dumps({"units": 1, "skipped": 1, "saved_s": float(meta.get("fusionrs_translate_s", 0))})}
        if self.keeper is not None and not ray.get(self.keeper.allowed.remote()):
            return {**row, "pending": True, "runtime": "{}", "stats": json.dumps({"units": 1, "stopped": 1})}
        t0 = time.perf_counter()
        cols = ["sample_id", "rgb_jpeg", "caption", "source", "source_record_id"]
        ing = self.storage.read_parquet(self.layout.ingest(self.fps["ingest"], part), columns=cols + ["reject_reason"])
        ok = ing.filter(pads.field("reject_reason").is_null())
        size = self.cfg.translate.batch_size * self.WINDOW_BATCHES
        windows = [{c: ok.slice(s, size).column(c).to_pylist() for c in cols} for s in range(0, ok.num_rows, size)]
        out: dict[str, list] = {c: [] for c in IR_STAGE_SCHEMA.names}
        prepare = getattr(self.translator, "prepare", None)  # diffv2ir splits CPU preparation from the GPU run
        ahead = self.pool.submit(prepare, windows[0]) if prepare and windows else None
        hashing = None
        for k, window in enumerate(windows):
            if prepare:
                ready = ahead.result()
                if k + 1 < len(windows):
                    ahead = self.pool.submit(prepare, windows[k + 1])
                res = self.translator.run(ready)
            else:
                res = self.translator(window)
            if hashing is not None:
                _append(out, hashing.result())
            hashing = self.pool.submit(_with_hashes, res)
        if hashing is not None:
            _append(out, hashing.result())
        elapsed = time.perf_counter() - t0
        runtime = json.dumps(self.translator.runtime(), sort_keys=True)
        table = pa.table(out, schema=IR_STAGE_SCHEMA).replace_schema_metadata(
            {"fusionrs_translate_s": f"{elapsed:.4f}", "fusionrs_runtime": runtime})
        self.storage.write_parquet(out_uri, table)
        if self.keeper is not None:
            self.keeper.charge.remote(elapsed * (self.cfg.translate.num_gpus or 0))
        return {**row, "pending": False, "runtime": runtime,
                "stats": json.dumps({"units": 1, "rows": len(out["sample_id"]), "busy_s": elapsed})}


def _with_hashes(res: dict) -> list[tuple]:
    """IR stage rows of one translated window: (sample_id, ir_jpeg, ir_status, ir_sha256, ir_phash)."""
    return [(sid, jpeg, status, *(ir_hashes(jpeg) if status == IR_OK else (None, None)))
            for sid, jpeg, status in zip(res["sample_id"], res["ir_jpeg"], res["ir_status"])]


def _append(out: dict[str, list], rows: list[tuple]) -> None:
    for r in rows:
        for c, v in zip(IR_STAGE_SCHEMA.names, r):
            out[c].append(v)


def ir_hashes(jpeg: bytes) -> tuple[str, str]:
    """SHA-256 of the IR file's bytes and pHash64 of its pixels: the IR edges of the joint groups."""
    return sha256_hex(jpeg), phash_hex(phash64(Image.open(io.BytesIO(jpeg))))


# ---------------------------------------------------------------------------------------
# Pass 3: IR-aware captions for the selected rows, then the part's triplets and rejects.


class CaptionPart:
    """Several parts per call (`caption.parts_per_call`), captioned together, so an API
    captioner keeps `caption.concurrency` requests in flight even when each part selects only
    a few rows. A part with rows that ended unfinished (402, budget, retries exhausted) is
    stored as `-partial` and redone on the next run; its paid responses come from the cache."""

    OUT_COLUMNS = ("ir_aware_caption", "ir_caption_raw_status", "ir_caption_cost_usd", "ir_caption_new_cost_usd",
                   "ir_caption_requests", "ir_caption_cache_hits", "ir_caption_tokens_in", "ir_caption_tokens_out")

    def __init__(self, cfg: BuildConfig, storage: Storage, fps: dict, limiter=None):
        self.cfg, self.storage, self.fps = cfg, storage, fps
        self.captioner = make_captioner(cfg, storage, limiter)
        self.layout = Layout(cfg.output)

    def __call__(self, batch: dict) -> dict:
        rows = [{k: _py(batch[k][i]) for k in batch} for i in range(len(batch["part"]))]
        todo = []  # (row index, out_uri, sample ids, ir jpegs, captions, rgb jpegs)
        for i, row in enumerate(rows):
            selected = sorted(sid for sid, a in json.loads(row["assign"]).items() if a["iraware"])
            out_uri = self.layout.caption(self.fps["caption"], row["part"], stable_hash(selected, 12))
            row.update(caption_uri="", caption_failed=0, stats=json.dumps({"units": 1}))
            if not selected:
                continue
            if self.storage.exists(out_uri):
                saved = self.storage.read_parquet(out_uri, columns=["ir_caption_cost_usd"]).column(0).to_pylist()
                row.update(caption_uri=out_uri, stats=json.dumps({"units": 1, "skipped": 1,
                                                                   "api_saved_usd": float(sum(x or 0 for x in saved))}))
                continue
            todo.append((i, out_uri, *self._inputs(row["part"], set(selected))))
        if todo:
            t0 = time.perf_counter()
            flat = {"sample_id": [], "ir_jpeg": [], "caption": [], "rgb_jpeg": []}
            for _, _, ids, irs, caps, rgbs in todo:
                for k, v in zip(flat, (ids, irs, caps, rgbs)):
                    flat[k] += v
            res = self.captioner(flat)
            elapsed = time.perf_counter() - t0
            k = 0
            for i, out_uri, ids, *_ in todo:
                cols = {c: list(res[c][k:k + len(ids)]) for c in self.OUT_COLUMNS}
                k += len(ids)
                failed = sum(s != CAPTION_RAW_OK for s in cols["ir_caption_raw_status"])
                if failed:
                    out_uri = out_uri.removesuffix(".parquet") + "-partial.parquet"
                self.storage.write_parquet(out_uri, pa.table({
                    "sample_id": pa.array(ids, pa.string()),
                    "ir_aware_caption": pa.array(cols["ir_aware_caption"], pa.string()),
                    "ir_caption_raw_status": pa.array(cols["ir_caption_raw_status"], pa.string()),
                    "ir_caption_cost_usd": pa.array(cols["ir_caption_cost_usd"], pa.float64())}))
                paid, total = float(sum(cols["ir_caption_new_cost_usd"])), float(sum(cols["ir_caption_cost_usd"]))
                rows[i].update(caption_uri=out_uri, caption_failed=failed, stats=json.dumps({
                    "units": 1, "rows": len(ids), "busy_s": elapsed * len(ids) / max(1, len(flat["sample_id"])),
                    "api_requests": int(sum(cols["ir_caption_requests"])), "api_usd": paid,
                    "api_cache_hits": int(sum(cols["ir_caption_cache_hits"])), "api_saved_usd": total - paid,
                    "api_tokens_in": int(sum(cols["ir_caption_tokens_in"])),
                    "api_tokens_out": int(sum(cols["ir_caption_tokens_out"]))}))
        return {key: [r[key] for r in rows] for key in rows[0]}

    def _inputs(self, part: str, selected: set[str]):
        cols = ["sample_id", "caption"] + (["rgb_jpeg"] if self.cfg.caption.include_rgb else [])
        by_id = {r["sample_id"]: r for r in self.storage.read_parquet(
            self.layout.ingest(self.fps["ingest"], part), columns=cols).to_pylist()}
        ir = self.storage.read_parquet(self.layout.ir(self.fps["translate"], part),
                                       columns=["sample_id", "ir_jpeg", "ir_status"])
        ids, irs, caps, rgbs = [], [], [], []
        for sid, jpeg, st in zip(*(ir.column(c).to_pylist() for c in ("sample_id", "ir_jpeg", "ir_status"))):
            if sid in selected and st == IR_OK:
                ids.append(sid)
                irs.append(jpeg)
                caps.append(by_id[sid]["caption"])
                rgbs.append(by_id[sid].get("rgb_jpeg"))
        return ids, irs, caps, rgbs


class WritePart:
    """Join a part's ingest rows, assignment, IR images and captions; write its triplets and
    rejects (deterministic names: a retried task or a rerun rewrites the same files)."""

    def __init__(self, cfg: BuildConfig, storage: Storage, fps: dict, tombstoned: frozenset = frozenset()):
        self.cfg, self.storage, self.fps = cfg, storage, fps
        self.layout = Layout(cfg.output)
        self.tombstoned = tombstoned  # taken down (build/tombstone.py): in neither triplets nor rejects

    def __call__(self, row: dict) -> dict:
        part, t0 = row["part"], time.perf_counter()
        assign = json.loads(row["assign"])
        ing = self.storage.read_parquet(self.layout.ingest(self.fps["ingest"], part)).to_pylist()
        ir = {r["sample_id"]: r for r in self.storage.read_parquet(self.layout.ir(self.fps["translate"], part)).to_pylist()}
        caps = ({r["sample_id"]: r for r in self.storage.read_parquet(row["caption_uri"]).to_pylist()}
                if row.get("caption_uri") else {})
        triplets, rejects, written = [], [], set()
        for r in ing:
            sid = r["sample_id"]
            if sid in self.tombstoned:
                continue
            if r["reject_reason"] is not None:
                rejects.append(reject_row(r, STAGE_INGEST))
                continue
            t = ir.get(sid)
            if t is None or t["ir_status"] != IR_OK:
                rejects.append(reject_row({**r, "reject_reason": (t or {}).get("ir_status") or "ir_missing",
                                           "reject_detail": None}, STAGE_TRANSLATE))
                continue
            a = assign.get(sid)
            if a is None or sid in written:
                # Usable and translated, but the plan gave the id to another row (another part's,
                # or an earlier one of this part): a duplicate sample_id. Reject, never drop.
                detail = "an earlier row of this part has the same sample_id" if sid in written else None
                rejects.append(reject_row({**r, "reject_reason": DUPLICATE_SAMPLE, "reject_detail": detail},
                                          STAGE_INGEST))
                continue
            written.add(sid)
            triplets.append(self.triplet(r, t, a, caps.get(sid)))
        splits = sorted({t["split"] for t in triplets})
        for sp in splits:  # one file per split: `load_dataset(OUT)` reads a split by file name
            rows = [t for t in triplets if t["split"] == sp]
            self.storage.write_parquet(self.layout.triplets(part, sp), pa.Table.from_pylist(rows, schema=TRIPLET_SCHEMA))
        if rejects:
            self.storage.write_parquet(self.layout.rejects(part), pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA))
        return {"part": part, "triplets": len(triplets), "triplet_splits": json.dumps(splits), "rejects": len(rejects),
                "caption_stats": row["stats"],
                "caption_failed": row["caption_failed"],
                "stats": json.dumps({"units": 1, "rows": len(triplets) + len(rejects), "busy_s": time.perf_counter() - t0})}

    def triplet(self, r: dict, t: dict, a: dict, c: dict | None) -> dict:
        if not a["iraware"]:
            ir_cap, ir_status, cost = None, IR_CAPTION_NOT_SELECTED, 0.0
        elif c is None:
            ir_cap, ir_status, cost = None, IR_CAPTION_NOT_CAPTIONED, 0.0
        elif c["ir_caption_raw_status"] != CAPTION_RAW_OK:
            ir_cap, ir_status, cost = None, c["ir_caption_raw_status"], c["ir_caption_cost_usd"]
        else:
            ir_status = ir_caption_status(c["ir_aware_caption"], r["caption"], self.cfg.ir_filter)
            ir_cap, cost = c["ir_aware_caption"], c["ir_caption_cost_usd"]
        return {
            "sample_id": r["sample_id"], "source": r["source"], "source_record_id": r["source_record_id"],
            "source_locator": r["source_locator"], "split": a["split"], "group_id": a["group"],
            "group_size": a["group_size"], "is_eval_representative": a["eval_rep"],
            "class_name": r["class_name"], "caption": r["caption"], "captions": r["captions"],
            "caption_status": r["caption_status"], "normalized_caption_key": r["caption_key"],
            "rgb_jpeg": r["rgb_jpeg"], "rgb_sha256": r["rgb_sha256"], "rgb_phash": r["rgb_phash"],
            "image_note": r["image_note"], "ir_jpeg": t["ir_jpeg"], "ir_status": t["ir_status"],
            "ir_sha256": t["ir_sha256"], "ir_phash": t["ir_phash"],
            "ir_aware_caption": ir_cap, "ir_caption_status": ir_status, "ir_caption_cost_usd": cost,
        }


def reject_row(r: dict, stage: str) -> dict:
    return {"sample_id": r["sample_id"], "source": r["source"], "source_record_id": r["source_record_id"],
            "source_locator": r["source_locator"], "stage": stage, "reason": r["reject_reason"],
            "detail": r.get("reject_detail"), "caption_status": r.get("caption_status"),
            "raw_captions": r.get("raw_captions") or []}


@dataclasses.dataclass
class BudgetKeeper:
    """Shared GPU spend for `cost.max_gpu_usd` (a Ray actor when wired by the build)."""

    max_usd: float
    gpu_hour_usd: float
    gpu_s: float = 0.0

    def charge(self, gpu_s: float) -> None:
        self.gpu_s += gpu_s

    def allowed(self) -> bool:
        return not self.max_usd or self.gpu_s * self.gpu_hour_usd / 3600 < self.max_usd
