"""The dataset build: where the stages are wired into Ray Data.

    pass 1 (Ray Data, per source unit):  read → decode/validate → clean captions → hash
    driver (ids and hashes only):        dedup → joint groups → split → IR-caption subset
    pass 2 (Ray Data, per part):         translate (actor pool) → caption (actor pool) → write

The shard ("part") is the unit of work, as in img2dataset: every stage reads a part's inputs
from storage and writes one file named by the part and the stage's fingerprint, atomically.
So output names are deterministic, a retried task rewrites the same file, and a rerun skips
parts whose stage output already exists. Only small per-part stats rows travel through Ray.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from . import __version__
from .caption.ir_filter import ir_caption_status
from .clean import CaptionCleaner
from .config import BuildConfig, stable_hash, to_yaml
from .dedup import group_samples
from .ingest import ingest_unit
from .ledger import RunLedger
from .readers import WorkUnit, plan_units
from .report import write_reports
from .split import assign_splits, cross_split_groups, select_subset
from .stages import IR_NOT_SELECTED, IR_OK, make_captioner, make_translator
from .storage import Storage, join

log = logging.getLogger("fusionrs.build")

# Bump when a stage's code changes what it writes: part of that stage's fingerprint.
INGEST_CODE_VERSION = "ingest-1"
WRITE_CODE_VERSION = "write-1"


# ---------------------------------------------------------------------------------------
# Fingerprints: what determines each stage's output.


def ingest_fingerprint(cfg: BuildConfig) -> str:
    return stable_hash({"code": INGEST_CODE_VERSION, "ingest": dataclasses.asdict(cfg.ingest),
                        "clean": dataclasses.asdict(cfg.clean),
                        "sources": [dataclasses.asdict(s) for s in cfg.sources]})


def translate_fingerprint(cfg: BuildConfig, ingest_fp: str) -> str:
    return stable_hash({"ingest": ingest_fp, "translator": make_translator(cfg).identity()})


def caption_fingerprint(cfg: BuildConfig, translate_fp: str) -> str:
    return stable_hash({"ir": translate_fp, "captioner": make_captioner(cfg, Storage()).identity()})


@dataclasses.dataclass
class Layout:
    """Where everything goes under the output URI."""

    output: str

    def ingest(self, fp: str, part: str = "") -> str:
        return join(self.output, "_stage", "ingest", fp, f"{part}.parquet" if part else "")

    def ingest_marker(self, fp: str, unit: str) -> str:
        """JSON list of a unit's parts, written last: the unit's commit."""
        return join(self.output, "_stage", "ingest", fp, f"{unit}.done.json")

    def ir(self, fp: str, part: str) -> str:
        return join(self.output, "_stage", "ir", fp, f"{part}.parquet")

    def caption(self, fp: str, part: str, selection: str) -> str:
        return join(self.output, "_stage", "caption", fp, f"{part}-{selection}.parquet")

    def triplets(self, part: str = "") -> str:
        return join(self.output, "triplets", f"{part}.parquet" if part else "")

    def rejects(self, part: str = "") -> str:
        return join(self.output, "rejects", f"{part}.parquet" if part else "")

    def file(self, name: str) -> str:
        return join(self.output, name)


# ---------------------------------------------------------------------------------------
# Stage callables over one unit / part (batch_size=1 in Ray Data). Plain functions and
# classes, also run directly by tests and the benchmark.


_CLEANERS: dict[str, CaptionCleaner] = {}


def run_ingest_unit(unit_row: dict, cfg: BuildConfig, storage: Storage, fp: str) -> dict:
    """Pass 1: one source unit → one or more ingest parts (each ≤ records_per_unit rows)."""
    unit = WorkUnit.from_row(unit_row)
    layout = Layout(cfg.output)
    done_marker = layout.ingest_marker(fp, unit.unit_id)
    if storage.exists(done_marker):
        parts = json.loads(storage.read_bytes(done_marker))
        return {"unit_id": unit.unit_id, "parts": json.dumps(parts), "skipped": True, "rows": sum(p["rows"] for p in parts),
                "busy_s": 0.0, "saved_s": sum(p.get("busy_s", 0.0) for p in parts)}
    # One cleaner per worker process and clean config: the language model loads once.
    cleaner = _CLEANERS.setdefault(stable_hash(dataclasses.asdict(cfg.clean)), CaptionCleaner(cfg.clean))
    t0 = time.perf_counter()
    table = ingest_unit(unit, cfg, storage, cleaner)
    size = cfg.ingest.records_per_unit
    parts = []
    n_parts = max(1, -(-table.num_rows // size))
    for k in range(n_parts):
        part_id = unit.unit_id if n_parts == 1 and unit.format != "rs5m_wds" else f"{unit.unit_id}-p{k:03d}"
        storage.write_parquet(layout.ingest(fp, part_id), table.slice(k * size, size))
        parts.append({"part": part_id, "rows": min(size, table.num_rows - k * size)})
    busy = time.perf_counter() - t0
    for p in parts:  # recorded so that a rerun which skips this unit can say what it saved
        p["busy_s"] = round(busy / len(parts), 4)
    # The marker is written last: a unit without it is redone whole on the next run.
    storage.write_text(done_marker, json.dumps(parts))
    return {"unit_id": unit.unit_id, "parts": json.dumps(parts), "skipped": False, "rows": table.num_rows,
            "busy_s": busy, "saved_s": 0.0}


class TranslatePart:
    """Pass 2a: translate every usable row of a part. Model loaded once per actor.

    Each IR file records the seconds it took (Parquet metadata), so a rerun that skips it can
    say what it saved. With a GPU budget (`cost.max_gpu_usd`) a shared keeper is asked before
    each part; past the cap the part is left untranslated (pending) and the run stops cleanly.
    """

    def __init__(self, cfg: BuildConfig, storage: Storage, ingest_fp: str, translate_fp: str, keeper=None):
        self.cfg, self.storage = cfg, storage
        self.ingest_fp, self.fp = ingest_fp, translate_fp
        self.translator = make_translator(cfg)
        self.layout = Layout(cfg.output)
        self.keeper = keeper

    def __call__(self, batch: dict) -> dict:
        return _per_row(batch, self.one)

    def one(self, row: dict) -> dict:
        import ray

        part = row["part"]
        out_uri = self.layout.ir(self.fp, part)
        done = {"translate_skipped": False, "translate_stopped": False, "translate_s": 0.0, "translate_saved_s": 0.0,
                "translated_rows": 0}
        if self.storage.exists(out_uri):
            meta = self.storage.parquet_metadata(out_uri)
            return {**row, **done, "translate_skipped": True, "translate_saved_s": float(meta.get("fusionrs_translate_s", 0))}
        if self.keeper is not None and not ray.get(self.keeper.allowed.remote()):
            return {**row, **done, "translate_stopped": True}
        t0 = time.perf_counter()
        cols = ["sample_id", "rgb_jpeg", "caption", "source", "source_record_id"]
        ing = self.storage.read_parquet(self.layout.ingest(self.ingest_fp, part), columns=cols + ["reject_reason"])
        ok = ing.filter(pads.field("reject_reason").is_null())
        ids, jpegs, statuses = [], [], []
        bs = self.cfg.translate.batch_size
        for s in range(0, ok.num_rows, bs):
            sub = ok.slice(s, bs)
            res = self.translator({c: sub.column(c).to_pylist() for c in cols})
            ids += res["sample_id"]
            jpegs += res["ir_jpeg"]
            statuses += res["ir_status"]
        elapsed = time.perf_counter() - t0
        table = pa.table({"sample_id": pa.array(ids, pa.string()), "ir_jpeg": pa.array(jpegs, pa.binary()),
                          "ir_status": pa.array(statuses, pa.string())})
        self.storage.write_parquet(out_uri, table.replace_schema_metadata({"fusionrs_translate_s": f"{elapsed:.4f}"}))
        if self.keeper is not None:
            self.keeper.charge.remote(elapsed * (self.cfg.translate.num_gpus or 0))
        return {**row, **done, "translate_s": elapsed, "translated_rows": len(ids)}


class BudgetKeeper:
    """Shared GPU spend for `cost.max_gpu_usd` (a Ray actor when wired by the build)."""

    def __init__(self, max_usd: float, gpu_hour_usd: float):
        self.max_usd, self.rate, self.gpu_s = max_usd, gpu_hour_usd / 3600.0, 0.0

    def charge(self, gpu_s: float) -> None:
        self.gpu_s += gpu_s

    def allowed(self) -> bool:
        return not self.max_usd or self.gpu_s * self.rate < self.max_usd


class CaptionPart:
    """Pass 2b: IR-aware captions for the selected rows whose translation succeeded.

    Several parts per call (`caption.parts_per_call`), captioned together, so an API
    captioner keeps `caption.concurrency` requests in flight even when each part selects only
    a few rows. A part with rows that ended unfinished (402, budget, retries exhausted) is
    stored as `-partial` and redone on the next run; its paid responses come from the cache.
    """

    OUT_COLUMNS = ("ir_aware_caption", "ir_caption_raw_status", "ir_caption_cost_usd", "ir_caption_new_cost_usd",
                   "ir_caption_requests", "ir_caption_cache_hits", "ir_caption_tokens_in", "ir_caption_tokens_out")

    def __init__(self, cfg: BuildConfig, storage: Storage, ingest_fp: str, translate_fp: str, caption_fp: str,
                 limiter=None):
        self.cfg, self.storage = cfg, storage
        self.ingest_fp, self.translate_fp, self.fp = ingest_fp, translate_fp, caption_fp
        self.captioner = make_captioner(cfg, storage, limiter)
        self.layout = Layout(cfg.output)

    def __call__(self, batch: dict) -> dict:
        rows = [{k: _py(batch[k][i]) for k in batch} for i in range(len(batch["part"]))]
        todo = []  # (row index, part, out_uri, sample ids, ir jpegs, captions, rgb jpegs)
        for i, row in enumerate(rows):
            selected = sorted(sid for sid, a in json.loads(row["assign"]).items() if a["iraware"])
            out_uri = self.layout.caption(self.fp, row["part"], stable_hash(selected, 12))
            row.update(caption_uri="", caption_skipped=False, caption_s=0.0, caption_requests=0,
                       caption_new_cost_usd=0.0, caption_cache_hits=0, caption_failed=0, caption_saved_usd=0.0,
                       caption_rows=0, caption_tokens_in=0, caption_tokens_out=0)
            if not selected or row.get("translate_stopped"):
                continue
            if self.storage.exists(out_uri):
                saved = self.storage.read_parquet(out_uri, columns=["ir_caption_cost_usd"]).column(0).to_pylist()
                row.update(caption_uri=out_uri, caption_skipped=True, caption_saved_usd=float(sum(x or 0 for x in saved)))
                continue
            todo.append((i, row["part"], out_uri, *self._inputs(row["part"], set(selected))))
        if todo:
            t0 = time.perf_counter()
            flat = {"sample_id": [], "ir_jpeg": [], "caption": [], "rgb_jpeg": []}
            for _, _, _, ids, irs, caps, rgbs in todo:
                flat["sample_id"] += ids
                flat["ir_jpeg"] += irs
                flat["caption"] += caps
                flat["rgb_jpeg"] += rgbs
            res = self.captioner(flat)
            elapsed = time.perf_counter() - t0
            k = 0
            for i, part, out_uri, ids, *_ in todo:
                sl = slice(k, k + len(ids))
                k += len(ids)
                cols = {c: list(res[c][sl]) for c in self.OUT_COLUMNS}
                failed = sum(s != "ok" for s in cols["ir_caption_raw_status"])
                if failed:
                    out_uri = out_uri.removesuffix(".parquet") + "-partial.parquet"
                self.storage.write_parquet(out_uri, pa.table({
                    "sample_id": pa.array(ids, pa.string()),
                    "ir_aware_caption": pa.array(cols["ir_aware_caption"], pa.string()),
                    "ir_caption_raw_status": pa.array(cols["ir_caption_raw_status"], pa.string()),
                    "ir_caption_cost_usd": pa.array(cols["ir_caption_cost_usd"], pa.float64())}))
                rows[i].update(caption_uri=out_uri, caption_s=elapsed * len(ids) / max(1, len(flat["sample_id"])),
                               caption_requests=int(sum(cols["ir_caption_requests"])),
                               caption_new_cost_usd=float(sum(cols["ir_caption_new_cost_usd"])),
                               caption_cache_hits=int(sum(cols["ir_caption_cache_hits"])), caption_failed=failed,
                               caption_saved_usd=float(sum(cols["ir_caption_cost_usd"]) - sum(cols["ir_caption_new_cost_usd"])),
                               caption_rows=len(ids), caption_tokens_in=int(sum(cols["ir_caption_tokens_in"])),
                               caption_tokens_out=int(sum(cols["ir_caption_tokens_out"])))
        return {key: [r[key] for r in rows] for key in rows[0]}

    def _inputs(self, part: str, selected: set[str]):
        cols = ["sample_id", "caption"] + (["rgb_jpeg"] if getattr(self.cfg.caption, "include_rgb", False) else [])
        ing = self.storage.read_parquet(self.layout.ingest(self.ingest_fp, part), columns=cols).to_pylist()
        by_id = {r["sample_id"]: r for r in ing}
        ir = self.storage.read_parquet(self.layout.ir(self.translate_fp, part))
        ids, irs, caps, rgbs = [], [], [], []
        for sid, jp, st in zip(ir.column("sample_id").to_pylist(), ir.column("ir_jpeg").to_pylist(),
                               ir.column("ir_status").to_pylist()):
            if sid in selected and st == IR_OK:
                ids.append(sid)
                irs.append(jp)
                caps.append(by_id[sid]["caption"])
                rgbs.append(by_id[sid].get("rgb_jpeg"))
        return ids, irs, caps, rgbs


def run_write_part(row: dict, cfg: BuildConfig, storage: Storage, ingest_fp: str, translate_fp: str) -> dict:
    """Pass 2c: join a part's ingest rows, assignment, IR and captions; write triplets and rejects."""
    layout = Layout(cfg.output)
    part = row["part"]
    t0 = time.perf_counter()
    if row.get("translate_stopped"):  # budget cap: nothing written, a rerun picks it up
        return {"part": part, "triplets": 0, "rejects": 0, "pending": 1, "write_s": 0.0}
    assign = json.loads(row["assign"])
    ing = storage.read_parquet(layout.ingest(ingest_fp, part)).to_pylist()
    ir = {r["sample_id"]: r for r in storage.read_parquet(layout.ir(translate_fp, part)).to_pylist()}
    caps = ({r["sample_id"]: r for r in storage.read_parquet(row["caption_uri"]).to_pylist()}
            if row.get("caption_uri") else {})
    triplets, rejects = [], []
    for r in ing:
        sid = r["sample_id"]
        a = assign.get(sid)
        if r["reject_reason"] is None and a is None:
            # Usable at ingest but absent from the assignment: a duplicate sample_id that the
            # split gave to another row. Reject, never drop.
            r = {**r, "reject_reason": "duplicate_sample_id", "reject_detail": None}
        if r["reject_reason"] is not None:
            rejects.append(_reject_row(r, "ingest"))
            continue
        t = ir.get(sid)
        if t is None or t["ir_status"] != IR_OK:
            rejects.append(_reject_row({**r, "reject_reason": (t or {}).get("ir_status") or "ir_missing",
                                        "reject_detail": None}, "translate"))
            continue
        c = caps.get(sid)
        if not a["iraware"]:
            ir_cap, ir_status, cost = None, IR_NOT_SELECTED, 0.0
        elif c is None:
            ir_cap, ir_status, cost = None, "failed:not_captioned", 0.0
        elif c["ir_caption_raw_status"] != "ok":
            ir_cap, ir_status, cost = None, c["ir_caption_raw_status"], c["ir_caption_cost_usd"]
        else:
            ir_status = ir_caption_status(c["ir_aware_caption"], r["caption"], cfg.ir_filter)
            ir_cap, cost = c["ir_aware_caption"], c["ir_caption_cost_usd"]
        triplets.append({
            "sample_id": sid, "source": r["source"], "source_record_id": r["source_record_id"],
            "source_locator": r["source_locator"], "split": a["split"], "group_id": a["group"],
            "group_size": a["group_size"], "is_eval_representative": a["eval_rep"],
            "class_name": r["class_name"], "caption": r["caption"], "captions": r["captions"],
            "caption_status": r["caption_status"], "normalized_caption_key": r["caption_key"],
            "rgb_jpeg": r["rgb_jpeg"], "rgb_sha256": r["rgb_sha256"], "rgb_phash": r["rgb_phash"],
            "image_note": r["image_note"], "ir_jpeg": t["ir_jpeg"], "ir_status": t["ir_status"],
            "ir_aware_caption": ir_cap, "ir_caption_status": ir_status, "ir_caption_cost_usd": cost,
        })
    if triplets:
        storage.write_parquet(layout.triplets(part), pa.Table.from_pylist(triplets, schema=TRIPLET_SCHEMA))
    if rejects:
        storage.write_parquet(layout.rejects(part), pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA))
    return {"part": part, "triplets": len(triplets), "rejects": len(rejects), "pending": 0,
            "write_s": time.perf_counter() - t0}


TRIPLET_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("source", pa.string()), ("source_record_id", pa.string()),
    ("source_locator", pa.string()), ("split", pa.string()), ("group_id", pa.string()),
    ("group_size", pa.int64()), ("is_eval_representative", pa.bool_()), ("class_name", pa.string()),
    ("caption", pa.string()), ("captions", pa.list_(pa.string())), ("caption_status", pa.string()),
    ("normalized_caption_key", pa.string()), ("rgb_jpeg", pa.binary()), ("rgb_sha256", pa.string()),
    ("rgb_phash", pa.string()), ("image_note", pa.string()), ("ir_jpeg", pa.binary()),
    ("ir_status", pa.string()), ("ir_aware_caption", pa.string()), ("ir_caption_status", pa.string()),
    ("ir_caption_cost_usd", pa.float64()),
])

REJECT_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("source", pa.string()), ("source_record_id", pa.string()),
    ("source_locator", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
    ("detail", pa.string()), ("caption_status", pa.string()), ("raw_captions", pa.list_(pa.string())),
])


def _reject_row(r: dict, stage: str) -> dict:
    return {"sample_id": r["sample_id"], "source": r["source"], "source_record_id": r["source_record_id"],
            "source_locator": r["source_locator"], "stage": stage, "reason": r["reject_reason"],
            "detail": r.get("reject_detail"), "caption_status": r.get("caption_status"),
            "raw_captions": r.get("raw_captions") or []}


def _per_row(batch: dict, fn) -> dict:
    keys = list(batch)
    n = len(batch[keys[0]])
    rows = [fn({k: _py(batch[k][i]) for k in keys}) for i in range(n)]
    return {k: [r[k] for r in rows] for k in rows[0]}


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


# ---------------------------------------------------------------------------------------
# Driver.


def plan_and_assign(cfg: BuildConfig, storage: Storage, ingest_fp: str, parts: list[str]) -> tuple[dict, dict]:
    """Read ids and hashes of all ingest parts; group, split, select. Returns per-part assignments."""
    layout = Layout(cfg.output)
    cols = ["sample_id", "source", "rgb_phash", "rgb_sha256", "caption_key", "reject_reason"]
    fs, _ = storage.resolve(cfg.output)
    paths = [storage.resolve(layout.ingest(ingest_fp, p))[1] for p in parts]
    table = pads.dataset(paths, filesystem=fs, format="parquet").to_table(columns=cols)
    part_of = np.repeat(np.arange(len(parts)), [pads.dataset(p, filesystem=fs, format="parquet").count_rows() for p in paths])
    ok_mask = np.asarray(table.column("reject_reason").is_null())
    t = table.filter(pa.array(ok_mask))
    part_ok = part_of[ok_mask]
    sids = t.column("sample_id").to_pylist()
    # A sample_id seen twice (the same record listed twice in a source) keeps its first row.
    first: dict[str, int] = {}
    keep = [first.setdefault(s, i) == i for i, s in enumerate(sids)]
    if not all(keep):
        idx = [i for i, k in enumerate(keep) if k]
        t, part_ok, sids = t.take(idx), part_ok[idx], [sids[i] for i in idx]
    sources = t.column("source").to_pylist()
    grouping = group_samples(sids, t.column("rgb_phash").to_pylist(), t.column("rgb_sha256").to_pylist(),
                             t.column("caption_key").to_pylist(), cfg.dedup.near_radius, cfg.dedup.caption_groups)
    split = assign_splits(sids, sources, grouping.group_id, cfg.split)
    crossing = cross_split_groups(grouping.group_id, split.split)
    if crossing:  # cannot happen by construction; refuse to write a leaky split
        raise RuntimeError(f"{crossing} groups cross splits")
    chosen = select_subset(sids, sources, split.split, cfg.subset)
    per_part: dict[str, dict] = {p: {} for p in parts}
    for i, sid in enumerate(sids):
        per_part[parts[part_ok[i]]][sid] = {
            "split": split.split[i], "group": grouping.group_id[i], "group_size": int(grouping.group_size[i]),
            "eval_rep": bool(split.is_eval_representative[i]), "iraware": bool(chosen[i])}
    summary = {"dedup": grouping.stats, "split_targets": split.targets, "split_achieved": split.achieved,
               "cross_split_groups": crossing, "duplicate_sample_ids": len(keep) - sum(keep),
               "iraware_selected": int(sum(chosen))}
    return per_part, summary


def init_ray(cfg: BuildConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if cfg.ray.address:
        kwargs = {"address": cfg.ray.address}
    elif cfg.ray.num_cpus:
        kwargs["num_cpus"] = cfg.ray.num_cpus
    ray.init(**kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.max_errored_blocks = 0  # never drop a block silently: per-row errors are reject rows
    ctx.enable_progress_bars = True


class BuildInterrupted(Exception):
    """SIGTERM (ray job stop): stop now, keep what is committed, write the ledger."""


def build(cfg: BuildConfig) -> dict:
    """Run the whole build; returns the manifest (also written to OUTPUT/manifest.json).

    A rerun with the same output resumes: committed stage files are reused (docs/pipeline.md).
    The run's ledger is written however the run ends (OUTPUT/ledger/<run>.json).
    """
    storage = Storage.from_config(cfg.storage)
    ledger = RunLedger(output=cfg.output, config_fingerprint=cfg.fingerprint(),
                       prices={"gpu_hour_usd": cfg.cost.gpu_hour_usd, "cpu_hour_usd": cfg.cost.cpu_hour_usd})
    init_ray(cfg)  # first: ray.init installs SIGTERM handling of its own, which ours must replace
    got_sigterm, restore = _on_sigterm()
    try:
        manifest = _build(cfg, storage, ledger)
    except BaseException as e:
        # Ray Data may wrap the exception raised in the signal handler: trust the flag.
        if isinstance(e, BuildInterrupted) or got_sigterm:
            ledger.write(storage, "interrupted")
            raise BuildInterrupted("SIGTERM") from e
        ledger.write(storage, "failed")
        raise
    finally:
        restore()
    ledger.write(storage, manifest["status"])
    return manifest


def _on_sigterm():
    import signal
    import threading

    flag: list[bool] = []  # truthy once SIGTERM arrived
    if threading.current_thread() is not threading.main_thread():
        return flag, lambda: None

    def handler(signum, frame):
        flag.append(True)
        raise BuildInterrupted("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    return flag, lambda: signal.signal(signal.SIGTERM, previous)


def _build(cfg: BuildConfig, storage: Storage, ledger: RunLedger) -> dict:
    import ray

    t_start = time.time()
    layout = Layout(cfg.output)
    # A process killed mid-write leaves a temporary file (never a half-written real one): sweep.
    for uri in storage.list_files(cfg.output, "*.tmp-*", recursive=True):
        storage.delete(uri)
    fps = {"ingest": ingest_fingerprint(cfg)}
    fps["translate"] = translate_fingerprint(cfg, fps["ingest"])
    fps["caption"] = caption_fingerprint(cfg, fps["translate"])
    timings: dict[str, float] = {}

    t0 = time.time()
    units, parts = _pass1_ingest(cfg, storage, fps, ledger)
    timings["ingest_s"] = ledger.stages["ingest"].wall_s = time.time() - t0

    t0 = time.time()
    per_part, plan_summary = plan_and_assign(cfg, storage, fps["ingest"], parts)
    timings["plan_s"] = time.time() - t0

    t0 = time.time()
    part_stats, limiter_state = _pass2(cfg, storage, fps, per_part, parts, ledger)
    timings["translate_caption_write_s"] = time.time() - t0

    # Parts written by an earlier build with other settings must not linger in the output.
    expected = {layout.triplets(s["part"]) for s in part_stats if s["triplets"]}
    expected |= {layout.rejects(s["part"]) for s in part_stats if s["rejects"]}
    pending = sorted(s["part"] for s in part_stats if s["pending"])
    for d in (layout.triplets(), layout.rejects()):
        for uri in storage.list_files(d, "*.parquet"):
            if uri not in expected and uri.rsplit("/", 1)[-1].removesuffix(".parquet") not in pending:
                storage.delete(uri)

    timings["total_s"] = time.time() - t_start
    identity = {"translator": make_translator(cfg).identity(), "captioner": make_captioner(cfg, storage).identity()}
    if limiter_state:
        identity["caption_limiter"] = limiter_state  # spend this run, breaker state
    manifest = {
        "fusionrs_version": __version__,
        "status": "stopped:gpu_budget" if pending else "completed",
        "pending_parts": pending,
        "run_id": ledger.run_id,
        "config_fingerprint": cfg.fingerprint(),
        "stage_fingerprints": fps,
        **identity,
        "packages": package_versions(),
        "units": len(units), "parts": len(parts),
        "work": {"ingest_units_skipped": ledger.stages["ingest"].skipped,
                 "translate_parts_skipped": ledger.stages["translate"].skipped,
                 "caption_parts_skipped": ledger.stages["caption"].skipped,
                 "caption_requests": ledger.stages["caption"].api_requests,
                 "caption_cache_hits": ledger.stages["caption"].api_cache_hits,
                 "caption_rows_unfinished": sum(int(s["caption_failed"]) for s in part_stats),
                 "api_new_spend_usd": round(ledger.stages["caption"].api_usd, 6)},
        "plan": plan_summary,
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "created_unix": int(t_start),
    }
    storage.write_text(layout.file("config.yaml"), to_yaml(cfg))
    manifest.update(write_reports(cfg, storage, layout, manifest))
    storage.write_text(layout.file("manifest.json"), json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def _pass1_ingest(cfg: BuildConfig, storage: Storage, fps: dict, ledger: RunLedger) -> tuple[list, list[str]]:
    import ray

    units = [u for src in cfg.sources for u in plan_units(src, storage, cfg.ingest.records_per_unit)]
    log.info("planned %d work units over %d sources", len(units), len(cfg.sources))
    ds = ray.data.from_items([u.to_row() for u in units], override_num_blocks=max(1, len(units)))
    ds = ds.map_batches(lambda b: _per_row(b, lambda r: run_ingest_unit(r, cfg, storage, fps["ingest"])),
                        batch_size=1, num_cpus=cfg.ray.ingest_num_cpus)
    st, unit_parts = ledger.stages["ingest"], {}
    for u in ds.iter_rows():  # streamed: an interrupted run still knows what it did
        st.units += 1
        st.skipped += bool(u["skipped"])
        st.rows += int(u["rows"])
        st.busy_s += float(u["busy_s"])
        st.saved_s += float(u["saved_s"])
        st.cpu_usd = st.busy_s * cfg.ray.ingest_num_cpus * cfg.cost.cpu_hour_usd / 3600
        st.saved_usd = st.saved_s * cfg.ray.ingest_num_cpus * cfg.cost.cpu_hour_usd / 3600
        unit_parts[u["unit_id"]] = [p["part"] for p in json.loads(u["parts"])]
    return units, [p for uid in sorted(unit_parts) for p in unit_parts[uid]]


def _pass2(cfg: BuildConfig, storage: Storage, fps: dict, per_part: dict, parts: list[str], ledger: RunLedger):
    import ray
    from ray.data import ActorPoolStrategy

    items = [{"part": p, "assign": json.dumps(per_part[p])} for p in parts]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    tc, cc = cfg.translate, cfg.caption
    keeper = None
    if cfg.cost.max_gpu_usd:
        keeper = ray.remote(BudgetKeeper).options(num_cpus=0).remote(cfg.cost.max_gpu_usd, cfg.cost.gpu_hour_usd)
    ds = ds.map_batches(TranslatePart, fn_constructor_kwargs=dict(cfg=cfg, storage=storage, ingest_fp=fps["ingest"],
                                                                  translate_fp=fps["translate"], keeper=keeper),
                        batch_size=1, compute=ActorPoolStrategy(min_size=tc.min_actors, max_size=tc.max_actors),
                        num_cpus=tc.num_cpus, num_gpus=tc.num_gpus or None)
    limiter = None
    if cc.backend == "openai":
        # One limiter for every caption actor: the API's limits are per key, not per actor.
        from .caption.openai_api import RateLimiter

        limiter = ray.remote(RateLimiter).options(num_cpus=0, max_concurrency=64).remote(
            cc.requests_per_minute, cc.tokens_per_minute, cc.budget_usd)
    ds = ds.map_batches(CaptionPart, fn_constructor_kwargs=dict(cfg=cfg, storage=storage, ingest_fp=fps["ingest"],
                                                                translate_fp=fps["translate"], caption_fp=fps["caption"],
                                                                limiter=limiter),
                        batch_size=cc.parts_per_call, compute=ActorPoolStrategy(min_size=cc.min_actors, max_size=cc.max_actors),
                        num_cpus=cc.num_cpus)
    keep = ("translate_skipped", "translate_stopped", "translate_s", "translate_saved_s", "translated_rows",
            "caption_skipped", "caption_s", "caption_requests", "caption_new_cost_usd", "caption_cache_hits",
            "caption_failed", "caption_saved_usd", "caption_rows", "caption_tokens_in", "caption_tokens_out")
    ds = ds.map_batches(lambda b: _per_row(b, lambda r: {**run_write_part(r, cfg, storage, fps["ingest"], fps["translate"]),
                                                         **{k: r[k] for k in keep}}),
                        batch_size=1, num_cpus=cfg.ray.write_num_cpus)
    t0, stats = time.time(), []
    gpu_rate, cpu_rate = cfg.cost.gpu_hour_usd / 3600, cfg.cost.cpu_hour_usd / 3600
    tr, ca, wr = ledger.stages["translate"], ledger.stages["caption"], ledger.stages["write"]
    for s in ds.iter_rows():
        stats.append(s)
        tr.units += 1
        tr.skipped += bool(s["translate_skipped"])
        tr.stopped += bool(s["translate_stopped"])
        tr.rows += int(s["translated_rows"])
        tr.busy_s += float(s["translate_s"])
        tr.gpu_s = tr.busy_s * (tc.num_gpus or 0)
        tr.gpu_usd = tr.gpu_s * gpu_rate
        tr.cpu_usd = tr.busy_s * tc.num_cpus * cpu_rate
        tr.saved_s += float(s["translate_saved_s"])
        tr.saved_gpu_s = tr.saved_s * (tc.num_gpus or 0)
        tr.saved_usd = tr.saved_gpu_s * gpu_rate + tr.saved_s * tc.num_cpus * cpu_rate
        ca.units += 1
        ca.skipped += bool(s["caption_skipped"])
        ca.rows += int(s["caption_rows"])
        ca.busy_s += float(s["caption_s"])
        ca.api_requests += int(s["caption_requests"])
        ca.api_cache_hits += int(s["caption_cache_hits"])
        ca.api_usd += float(s["caption_new_cost_usd"])
        ca.api_tokens_in += int(s["caption_tokens_in"])
        ca.api_tokens_out += int(s["caption_tokens_out"])
        ca.saved_usd += float(s["caption_saved_usd"])
        wr.units += 1
        wr.rows += int(s["triplets"]) + int(s["rejects"])
        wr.busy_s += float(s["write_s"])
        wr.cpu_usd = wr.busy_s * cfg.ray.write_num_cpus * cpu_rate
        tr.wall_s = ca.wall_s = wr.wall_s = time.time() - t0
    limiter_state = None
    if limiter is not None:
        limiter_state = ray.get(limiter.state.remote())
        ray.kill(limiter)
    if keeper is not None:
        ray.kill(keeper)
    return stats, limiter_state


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("ray", "pyarrow", "pillow", "numpy", "scipy", "py3langid", "torch", "diffusers", "transformers"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            pass
    return out

