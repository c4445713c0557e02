"""Build throughput: rows/s and peak RSS of the Ray build (the `demo` recipe over generated
sample sources) at 1k and 10k rows, and the bare-loop rate of each stage on the same machine,
in one run. Measures and prints; not a test.

    python bench/build_throughput.py                                  # 1k and 10k rows
    python bench/build_throughput.py --rows 1000                      # one size
    python bench/build_throughput.py --rows 10000 100000 --set translate.resolution=64 --no-bare-loop

Sources: `fusionrs.dev.sample.write_sample` with rows // 5 records per source (its planted
records come on top), built with `configs/demo.yaml` pointed at them (`source_overrides`);
`--set KEY=VALUE` overrides any build config key. Each build runs in its own process (a fresh
local Ray instance, RAY_ADDRESS ignored), so peak RSS figures are independent. Reported per
build: rows/s over the build (Ray already started), the build driver's peak RSS (sampled, and
ru_maxrss), the driver's peak RSS per build phase, and the peak of the whole process tree
(driver + every Ray process it started) as PSS, which counts shared pages (the object store)
once. `--work DIR` keeps the sources and outputs there (default: a temporary folder);
`--sources DIR` reuses the sources of an earlier run's `--work DIR` (DIR/r<rows>/src) instead of
generating them (100K rows of sources take ~15 min to generate).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_config(sample_dir: Path, out: Path, overrides: list[str]):
    from fusionrs.config import load_config
    from fusionrs.config.recipes import recipe
    from fusionrs.dev.sample import source_overrides

    demo = recipe("demo")
    return load_config(demo, [*source_overrides(demo, sample_dir), f"output={out}", *overrides])


def make_sources(root: Path, rows: int) -> tuple[Path, int]:
    """Sample sources for about `rows` rows; returns their folder and the records written."""
    from fusionrs.dev.sample import write_sample

    info = write_sample(root / "src", per_source=max(1, rows // 5), seed=0)
    return Path(info["out"]), info["records"]


def reuse_sources(root: Path, rows: int) -> tuple[Path, int]:
    """The sources an earlier run generated for `rows` rows under `root` (its --work folder)."""
    from fusionrs.dev.sample import read_manifest

    src = root / f"r{rows}" / "src"
    if not (src / "records.json").exists():
        sys.exit(f"{src} holds no generated sources (records.json): run once with --work {root} first")
    return src, len(read_manifest(src)["records"])


def bare_loop_rates(cfg, n: int = 300) -> dict:
    """Rows/s of each stage alone, in a plain single-process loop (no Ray), over n records
    taken evenly from the sources."""
    from fusionrs.build.caption.cues import CueCaptioner
    from fusionrs.build.clean import CaptionCleaner
    from fusionrs.build.ingest import ingest_record
    from fusionrs.build.parts import ir_hashes
    from fusionrs.build.readers import plan_units, read_unit
    from fusionrs.build.translate.pseudo_ir import PseudoIRTranslator
    from fusionrs.core.storage import Storage

    st = Storage.from_config(cfg.storage)
    recs, per_source = [], -(-n // len(cfg.sources))
    for s in cfg.sources:
        mine = []
        for u in plan_units(s, st, cfg.ingest.records_per_unit):
            mine += list(read_unit(u, st))
            if len(mine) >= per_source:
                break
        recs += mine[:per_source]
    cleaner = CaptionCleaner(cfg.clean)
    for r in recs[:5]:  # warm up: the language model loads once per process, not per row
        ingest_record(r, cfg, cleaner)
    t0 = time.perf_counter()
    rows = [ingest_record(r, cfg, cleaner) for r in recs]
    ingest = len(recs) / (time.perf_counter() - t0)
    ok = [r for r in rows if r["reject_reason"] is None]
    tr = PseudoIRTranslator(cfg.translate)
    t0 = time.perf_counter()
    out = tr({"sample_id": [r["sample_id"] for r in ok], "rgb_jpeg": [r["rgb_jpeg"] for r in ok]})
    hashes = [ir_hashes(j) for j in out["ir_jpeg"] if j is not None]  # the translate stage hashes every IR image
    translate = len(ok) / (time.perf_counter() - t0)
    ok_ir = [(j, r["caption"]) for j, r in zip(out["ir_jpeg"], ok) if j is not None]
    assert len(hashes) == len(ok_ir)
    cap = CueCaptioner()
    t0 = time.perf_counter()
    cap({"ir_jpeg": [j for j, _ in ok_ir], "caption": [c for _, c in ok_ir]})
    caption = len(ok_ir) / (time.perf_counter() - t0)
    return {"ingest": ingest, f"translate_{cfg.translate.backend}": translate, f"caption_{cfg.caption.backend}": caption}


class PhaseClock:
    """Wraps the build's phase functions (pipeline module globals, looked up at call time) to
    record when each ran, so the driver's RSS can be attributed to a phase. Changes nothing."""

    NAMES = ("plan_sources", "_ingest", "_translate", "read_plan_input", "make_plan", "assignments_by_part",
             "_caption_and_write", "write_reports")

    def __init__(self):
        from fusionrs.build import pipeline

        self.marks: list[list] = []  # [name, start, end (None while running)]
        for name in self.NAMES:
            setattr(pipeline, name, self._wrap(name, getattr(pipeline, name)))

    def _wrap(self, name, fn):
        def timed(*args, **kwargs):
            mark = [name.lstrip("_"), time.monotonic(), None]
            self.marks.append(mark)
            try:
                return fn(*args, **kwargs)
            finally:
                mark[2] = time.monotonic()
        return timed

    def phase_at(self, t: float) -> str:
        for name, t0, t1 in reversed(self.marks):
            if t0 <= t and (t1 is None or t <= t1):
                return name
        return "other"


def tree_pss(me: psutil.Process) -> int:
    """PSS of this process and every process it started (Ray's GCS, raylet, workers...)."""
    total = 0
    for p in [me, *me.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def one_build(sample_dir: str, out: str, overrides: list[str]) -> None:
    """Child process: run the build, sample the RSS of the driver and the PSS of its process tree."""
    from fusionrs.build.pipeline import build, init_ray

    os.environ.pop("RAY_ADDRESS", None)  # a fresh local instance, never a running cluster
    cfg = build_config(Path(sample_dir), Path(out), ["ray.address=", "ray.num_cpus=2", *overrides])
    clock = PhaseClock()
    me = psutil.Process()
    peak = {"driver": 0, "tree_pss": 0, "driver_by_phase": {}}
    stop = threading.Event()

    def sample():
        n = 0
        while not stop.is_set():
            try:
                drv = me.memory_info().rss
                peak["driver"] = max(peak["driver"], drv)
                ph = clock.phase_at(time.monotonic())
                peak["driver_by_phase"][ph] = max(peak["driver_by_phase"].get(ph, 0), drv)
                if n % 5 == 0:  # the tree (PSS reads every process's smaps): once a second
                    peak["tree_pss"] = max(peak["tree_pss"], tree_pss(me))
            except psutil.Error:
                pass
            n += 1
            time.sleep(0.2)

    init_ray(cfg)  # started before the clock: rows/s is the build's, not Ray's start-up
    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    m = build(cfg)
    wall = time.perf_counter() - t0
    stop.set()
    time.sleep(0.3)
    rows_in = m["counts"]["triplets"] + m["counts"]["rejects"]
    print(json.dumps({
        "rows_in": rows_in, "triplets": m["counts"]["triplets"], "parts": m["parts"], "wall_s": wall,
        "rows_per_s": rows_in / wall, "driver_peak_rss_mb": peak["driver"] / 2**20,
        "driver_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tree_peak_pss_mb": peak["tree_pss"] / 2**20,
        "driver_peak_rss_mb_by_phase": {k: round(v / 2**20) for k, v in peak["driver_by_phase"].items()},
        "phase_s": {name: round(t1 - t0, 2) for name, t0, t1 in clock.marks},
        "timings": m["timings"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a build config override (repeatable), e.g. translate.resolution=64")
    ap.add_argument("--work", default="", help="keep sources and outputs in this folder (default: a temporary one)")
    ap.add_argument("--sources", default="", help="reuse the sources of an earlier run's --work folder")
    ap.add_argument("--no-bare-loop", action="store_true", help="skip the single-process stage rates")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        one_build(*a.child, a.overrides)
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, python {platform.python_version()}; "
          f"recipe demo{''.join(' ' + o for o in a.overrides)}", flush=True)
    results, rates = {}, {}
    with tempfile.TemporaryDirectory(prefix="fusionrs-build-bench-") as tmp:
        work = Path(a.work).resolve() if a.work else Path(tmp)
        for rows in a.rows:
            d = work / f"r{rows}"
            if (d / "out").exists():  # the build would resume it: nothing would be measured
                sys.exit(f"{d / 'out'} exists (a build there resumes); remove it or pick another --work")
            t0 = time.perf_counter()
            src, records = reuse_sources(Path(a.sources).resolve(), rows) if a.sources else make_sources(d, rows)
            gen = time.perf_counter() - t0
            print(f"{rows:>7} rows: {records} records " + (f"reused from {src}" if a.sources else f"generated in {gen:.0f}s"),
                  flush=True)
            if rows == a.rows[0] and not a.no_bare_loop:
                rates = bare_loop_rates(build_config(src, d / "unused", a.overrides))
                print("bare-loop rows/s (1 process): " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()),
                      flush=True)
            cmd = [sys.executable, __file__, "--child", str(src), str(d / "out"), *(f"--set={o}" for o in a.overrides)]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode:
                sys.exit(f"build of {rows} rows failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
            res = json.loads(p.stdout.strip().splitlines()[-1])
            res["generate_s"] = gen
            results[rows] = res
            t = res["timings"]
            print(f"{rows:>7} rows: {res['rows_in']} rows in, {res['rows_per_s']:.1f} rows/s in {res['wall_s']:.1f}s "
                  f"(ingest {t['ingest_s']}s, translate {t['translate_s']}s, plan {t['plan_s']}s, "
                  f"caption+write {t['caption_write_s']}s); driver peak RSS {res['driver_peak_rss_mb']:.0f} MiB "
                  f"(ru_maxrss {res['driver_maxrss_mb']:.0f}), process tree peak PSS {res['tree_peak_pss_mb']:.0f} MiB",
                  flush=True)
            print(f"         driver peak RSS by phase (MiB): {res['driver_peak_rss_mb_by_phase']}", flush=True)
            print("RESULT " + json.dumps({"rows": rows, **res}), flush=True)
    big = results[max(results)]
    if rates:
        slowest = min(rates, key=rates.get)
        print(f"slowest stage bare loop: {slowest} {rates[slowest]:.1f} rows/s; "
              f"Ray build at {max(results)} rows reaches {big['rows_per_s'] / rates[slowest]:.0%} of it")
    if len(results) > 1:
        small = results[min(results)]
        print(f"driver peak RSS ratio {max(results)}/{min(results)} rows: "
              f"{big['driver_peak_rss_mb'] / small['driver_peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
