"""The dataset build: the one place where the stages are wired into Ray Data.

    pass 1 (Ray tasks, per source unit):  read → decode/validate → clean captions → hash
    pass 2 (actor pool, per part):        translate every usable row; IR SHA-256 and pHash
    driver (ids and hashes only):         joint groups (RGB + IR + captions) → split → subset
    pass 3 (per part):                    caption (actor pool) → write triplets and rejects (tasks)

The workers are plain classes in parts.py; the plan is plan.py; this module only starts Ray,
streams units and parts through the workers, sums their stats into the ledger and writes the
manifest. The shard ("part") is the unit of work (docs/pipeline.md): every stage writes one
file per part named by the part and the stage's fingerprint, so a rerun skips what is done.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from importlib.metadata import PackageNotFoundError, version

import ray
from ray.data import ActorPoolStrategy

from fusionrs import __version__
from fusionrs.build.caption.openai_api import RateLimiter
from fusionrs.build.fingerprints import stage_fingerprints
from fusionrs.build.forecast import Rates, forecast
from fusionrs.build.ledger import RunLedger
from fusionrs.build.parts import BudgetKeeper, CaptionPart, IngestUnit, TranslatePart, WritePart, per_row
from fusionrs.build.plan import assignments_by_part, make_plan, read_plan_input
from fusionrs.build.progress import Progress
from fusionrs.build.readers import SourceError, plan_units
from fusionrs.build.report import console_summary, write_reports
from fusionrs.build.stages import captioner_identity, translator_identity
from fusionrs.config.build import BuildConfig
from fusionrs.config.loader import to_yaml
from fusionrs.core.ray_session import start_ray
from fusionrs.core.storage import Storage
from fusionrs.dataset.layout import TMP_MARK, Layout
from fusionrs.dataset.release import tombstone_manifest_fields, tombstoned_ids

log = logging.getLogger("fusionrs.build")


class BuildInterrupted(Exception):
    """SIGTERM (ray job stop): stop now, keep what is committed, write the ledger."""


def build(cfg: BuildConfig) -> dict:
    """Run the whole build; returns the manifest (also written to OUTPUT/manifest.json).

    A rerun with the same output resumes: committed stage files are reused (docs/pipeline.md).
    The run's ledger is written however the run ends (OUTPUT/ledger/<run>.json).
    """
    storage = Storage.from_config(cfg.storage)
    # Sources are planned first: a missing root, an unreadable annotations file or an empty
    # source is a clear error before anything is written.
    units = plan_sources(cfg, storage)
    ledger = RunLedger(output=cfg.output, config_fingerprint=cfg.fingerprint(),
                       prices={"gpu_hour_usd": cfg.cost.gpu_hour_usd, "cpu_hour_usd": cfg.cost.cpu_hour_usd})
    for stage, gpus, cpus in (("ingest", 0, cfg.ray.ingest_num_cpus), ("translate", cfg.translate.num_gpus,
                              cfg.translate.num_cpus), ("caption", 0, cfg.caption.num_cpus),
                              ("write", 0, cfg.ray.write_num_cpus)):
        ledger.stages[stage].gpus, ledger.stages[stage].cpus = gpus, cpus
    init_ray(cfg)  # first: ray.init installs SIGTERM handling of its own, which ours must replace
    got_sigterm, restore = _on_sigterm()
    try:
        manifest = _build(cfg, storage, ledger, units)
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


def run_build_command(cfg: BuildConfig) -> int:
    """`fusionrs build` and `python -m jobs.build_dataset`: build, print the summary, exit code.
    On SIGTERM (`ray job stop`) the ledger is already written: exit at once (Ray's own shutdown
    hooks can take longer than the few seconds `ray job stop` waits before SIGKILL)."""
    t0 = time.time()
    try:
        manifest = build(cfg)
    except SourceError as e:
        print(f"source error: {e}", file=sys.stderr)
        return 2
    except BuildInterrupted:
        print(f"stopped (SIGTERM): committed work is kept; rerun the same command to resume. "
              f"Ledger: fusionrs cost {cfg.output}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(143)
    print(console_summary(cfg, manifest, time.time() - t0))
    return 0


def init_ray(cfg: BuildConfig) -> None:
    """The configured cluster, else RAY_ADDRESS, else a new local instance; Ray's INFO lines to
    OUTPUT/logs/ray.log unless --verbose (core/ray_session.py)."""
    start_ray(cfg.ray.address, cfg.ray.num_cpus, Layout(cfg.output).file("logs/ray.log"))


def _on_sigterm():
    flag: list[bool] = []  # truthy once SIGTERM arrived
    if threading.current_thread() is not threading.main_thread():
        return flag, lambda: None

    def handler(signum, frame):
        flag.append(True)
        raise BuildInterrupted("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    return flag, lambda: signal.signal(signal.SIGTERM, previous)


def plan_sources(cfg: BuildConfig, storage: Storage) -> list[dict]:
    """Every source's work units, as the rows the ingest dataset is made of (WorkUnit.to_row:
    entries as one JSON string). Each source's units become rows as soon as they are planned:
    the driver holds them for the whole build, and at 100K records the WorkUnit objects (a dict
    of Python strings per record) took ~200 MiB more than their rows."""
    rows: list[dict] = []
    for src in cfg.sources:
        mine = plan_units(src, storage, cfg.ingest.records_per_unit)
        if not mine:
            raise SourceError(f"source {src.name}: no records under {src.root}"
                              + (f" in {src.annotations}" if src.annotations else ""))
        rows += [u.to_row() for u in mine]
        del mine
    log.info("planned %d work units over %d sources", len(rows), len(cfg.sources))
    return rows


def _build(cfg: BuildConfig, storage: Storage, ledger: RunLedger, units: list) -> dict:
    t_start = time.time()
    layout = Layout(cfg.output)
    # A process killed mid-write leaves a temporary file (never a half-written real one). Only
    # the build's own folders are swept: the output may hold files that are not the build's.
    for d in layout.own_dirs():
        for uri in storage.list_files(d, f"*{TMP_MARK}*", recursive=True):
            storage.delete(uri)
    fps = stage_fingerprints(cfg, storage)
    timings: dict[str, float] = {}

    t0 = time.time()
    parts = _ingest(cfg, storage, fps, ledger, units)
    timings["ingest_s"] = ledger.stages["ingest"].wall_s = time.time() - t0

    t0 = time.time()
    pending, runtimes = _translate(cfg, storage, fps, parts, ledger)
    timings["translate_s"] = ledger.stages["translate"].wall_s = time.time() - t0

    manifest = {
        "fusionrs_version": __version__, "status": "completed", "run_id": ledger.run_id,
        "config_fingerprint": cfg.fingerprint(), "stage_fingerprints": fps,
        "translator": translator_identity(cfg, storage), "translator_runtime": runtimes,
        "captioner": captioner_identity(cfg), "packages": package_versions(),
        "units": len(units), "parts": len(parts), "pending_parts": pending, "created_unix": int(t_start),
    }
    if pending:
        # The plan needs every translation (IR hashes are group edges): stop cleanly; a rerun
        # translates the rest and reuses everything done. triplets/ stay as the last completed build left them.
        manifest["status"] = "stopped:gpu_budget"
        manifest["work"] = _work(ledger, [])
        storage.write_text(layout.file("manifest.json"), json.dumps(manifest, indent=2, sort_keys=True))
        return manifest

    t0 = time.time()
    tombstoned = frozenset(tombstoned_ids(cfg.output, storage))  # takedowns stay out of every rebuild
    rows, duplicates = read_plan_input(cfg, storage, fps, parts, tombstoned)
    plan = make_plan(rows, cfg)
    print(f"[plan] {len(rows.sample_id):,} rows in {plan.summary['dedup']['groups']:,} joint groups; "
          f"split {_split_counts(plan.split)}; {plan.summary['iraware_selected']:,} for IR-aware captions", flush=True)
    plan.summary["duplicate_sample_ids"] = duplicates
    manifest["forecast"] = forecast(cfg, len(rows.sample_id), plan.summary["iraware_selected"], Rates.load())
    per_part = assignments_by_part(rows, plan, parts)
    timings["plan_s"] = time.time() - t0

    t0 = time.time()
    part_stats, limiter_state = _caption_and_write(cfg, storage, fps, per_part, parts, ledger, tombstoned)
    timings["caption_write_s"] = time.time() - t0

    # Parts written by an earlier build with other settings must not linger in the output.
    expected = {layout.triplets(s["part"], sp) for s in part_stats for sp in json.loads(s["triplet_splits"])}
    expected |= {layout.rejects(s["part"]) for s in part_stats if s["rejects"]}
    for d in (layout.triplets(), layout.rejects()):
        for uri in storage.list_files(d, "*.parquet"):
            if uri not in expected:
                storage.delete(uri)

    timings["total_s"] = time.time() - t_start
    if limiter_state:
        manifest["caption_limiter"] = limiter_state  # spend this run, breaker state
    if plan.summary["split_shortfalls"]:
        log.warning("held-out splits short of their targets: %s", plan.summary["split_shortfalls"])
    manifest.update(work=_work(ledger, part_stats), plan=plan.summary,
                    timings={k: round(v, 2) for k, v in timings.items()}, **tombstone_manifest_fields(cfg.output, storage))
    storage.write_text(layout.file("config.yaml"), to_yaml(cfg))
    manifest.update(write_reports(cfg, storage, layout, manifest))
    storage.write_text(layout.file("manifest.json"), json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def _split_counts(splits: list[str]) -> str:
    c = Counter(splits)
    return " / ".join(f"{c.get(s, 0):,} {s}" for s in ("train", "val", "test"))


def _work(ledger: RunLedger, part_stats: list[dict]) -> dict:
    st = ledger.stages
    return {"ingest_units_skipped": st["ingest"].skipped, "translate_parts_skipped": st["translate"].skipped,
            "caption_parts_skipped": st["caption"].skipped, "caption_requests": st["caption"].api_requests,
            "caption_cache_hits": st["caption"].api_cache_hits,
            "caption_rows_unfinished": sum(int(s["caption_failed"]) for s in part_stats),
            "api_new_spend_usd": round(st["caption"].api_usd, 6)}


def _ingest(cfg: BuildConfig, storage: Storage, fps: dict, ledger: RunLedger, units: list) -> list[str]:
    ingest = IngestUnit(cfg, storage, fps["ingest"])
    ds = ray.data.from_items(units, override_num_blocks=max(1, len(units)))
    ds = ds.map_batches(lambda b: per_row(b, ingest), batch_size=1, num_cpus=cfg.ray.ingest_num_cpus)
    unit_parts, progress = {}, Progress("ingest", len(units), "units")
    for u in ds.iter_rows():  # streamed: an interrupted run still knows what it did
        stats = json.loads(u["stats"])
        ledger.stages["ingest"].add(stats, ledger.prices)
        progress.update(rows=stats.get("rows", 0))
        unit_parts[u["unit_id"]] = [p["part"] for p in json.loads(u["parts"])]
    progress.close()
    return [p for uid in sorted(unit_parts) for p in unit_parts[uid]]


def _translate(cfg: BuildConfig, storage: Storage, fps: dict, parts: list[str], ledger: RunLedger):
    """Every part through the translate actor pool. Returns (pending parts, runtime counts)."""
    tc = cfg.translate
    keeper = None
    if cfg.cost.max_gpu_usd:
        keeper = ray.remote(BudgetKeeper).options(num_cpus=0).remote(cfg.cost.max_gpu_usd, cfg.cost.gpu_hour_usd)
    ds = ray.data.from_items([{"part": p} for p in parts], override_num_blocks=max(1, len(parts)))
    ds = ds.map_batches(TranslatePart, fn_constructor_kwargs=dict(cfg=cfg, storage=storage, fps=fps, keeper=keeper),
                        batch_size=1, compute=ActorPoolStrategy(min_size=tc.min_actors, max_size=tc.max_actors),
                        num_cpus=tc.num_cpus, num_gpus=tc.num_gpus or None)
    pending, runtimes, progress = [], Counter(), Progress("translate", len(parts))
    for r in ds.iter_rows():
        stats = json.loads(r["stats"])
        ledger.stages["translate"].add(stats, ledger.prices)
        progress.update(rows=stats.get("rows", 0))
        if r["pending"]:
            pending.append(r["part"])
        elif r["runtime"] != "{}":
            runtimes[r["runtime"]] += 1
    progress.close()
    if keeper is not None:
        ray.kill(keeper)
    return sorted(pending), {k: v for k, v in sorted(runtimes.items())}


def _caption_and_write(cfg: BuildConfig, storage: Storage, fps: dict, per_part: dict, parts: list[str],
                       ledger: RunLedger, tombstoned: frozenset):
    cc = cfg.caption
    limiter = None
    if cc.backend == "openai":
        # One limiter for every caption actor: the API's limits are per key, not per actor.
        limiter = ray.remote(RateLimiter).options(num_cpus=0, max_concurrency=64).remote(
            cc.requests_per_minute, cc.tokens_per_minute, cc.budget_usd)
    items = [{"part": p, "assign": json.dumps(per_part[p])} for p in parts]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(CaptionPart, fn_constructor_kwargs=dict(cfg=cfg, storage=storage, fps=fps, limiter=limiter),
                        batch_size=cc.parts_per_call, compute=ActorPoolStrategy(min_size=cc.min_actors, max_size=cc.max_actors),
                        num_cpus=cc.num_cpus)
    write = WritePart(cfg, storage, fps, tombstoned)
    ds = ds.map_batches(lambda b: per_row(b, write), batch_size=1, num_cpus=cfg.ray.write_num_cpus)
    t0, stats, progress = time.time(), [], Progress("caption+write", len(parts))
    for s in ds.iter_rows():
        stats.append(s)
        caption = json.loads(s["caption_stats"])
        ledger.stages["caption"].add(caption, ledger.prices)
        ledger.stages["write"].add(json.loads(s["stats"]), ledger.prices)
        ledger.stages["caption"].wall_s = ledger.stages["write"].wall_s = time.time() - t0
        progress.update(rows=s["triplets"] + s["rejects"], usd=caption.get("api_usd", 0.0))
    progress.close()
    limiter_state = None
    if limiter is not None:
        limiter_state = ray.get(limiter.state.remote())
        ray.kill(limiter)
    return stats, limiter_state


def package_versions() -> dict[str, str]:
    out = {}
    for p in ("ray", "pyarrow", "pillow", "numpy", "scipy", "py3langid", "torch", "diffusers", "transformers"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            pass
    return out
