"""Build throughput: rows/s and peak RSS of the Ray build at 1k and 10k synthetic rows, and the
bare-loop rate of each stage on the same machine, in one run. Measures and prints; not a test.

    python bench/build_throughput.py                 # 1k and 10k rows
    python bench/build_throughput.py --rows 1000     # one size

Each build runs in its own process (fresh Ray instance), so peak RSS figures are independent.
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


def make_sources(root: Path, rows: int) -> Path:
    from fusionrs.dev.sample import write_sample

    info = write_sample(root / "src", per_source=max(1, rows // 5), seed=0)
    return Path(info["build_config"])


def bare_loop_rates(build_yaml: Path, n: int = 300) -> dict:
    """Rows/s of each stage alone, in a plain single-process loop (no Ray)."""
    from fusionrs.build.caption.cues import CueCaptioner
    from fusionrs.build.clean import CaptionCleaner
    from fusionrs.build.ingest import ingest_record
    from fusionrs.build.readers import plan_units, read_unit
    from fusionrs.build.translate.pseudo_ir import PseudoIRTranslator
    from fusionrs.config import load_config
    from fusionrs.core.storage import Storage

    cfg = load_config(build_yaml, ["output=/tmp/unused"])
    st = Storage()
    recs = []
    for s in cfg.sources:
        for u in plan_units(s, st, cfg.ingest.records_per_unit):
            recs += list(read_unit(u, st))
            if len(recs) >= n:
                break
    recs = recs[:n]
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
    translate = len(ok) / (time.perf_counter() - t0)
    cap = CueCaptioner()
    t0 = time.perf_counter()
    cap({"sample_id": out["sample_id"], "ir_jpeg": out["ir_jpeg"], "caption": [r["caption"] for r in ok]})
    caption = len(ok) / (time.perf_counter() - t0)
    return {"ingest": ingest, "translate_pseudo_ir": translate, "caption_cues": caption}


def one_build(build_yaml: str, out: str) -> None:
    """Child process: run the build, sample RSS of the driver and of all Ray workers."""
    from fusionrs.build.pipeline import build
    from fusionrs.config import load_config
    me = psutil.Process()
    peak = {"driver": 0, "all": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                drv = me.memory_info().rss
                tot = drv + sum(c.memory_info().rss for c in psutil.Process(1).children(recursive=True)
                                if c.pid != me.pid and ("ray" in " ".join(c.cmdline()[:3]).lower()))
            except psutil.Error:
                continue
            peak["driver"] = max(peak["driver"], drv)
            peak["all"] = max(peak["all"], tot)
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    cfg = load_config(build_yaml, [f"output={out}", "ray.num_cpus=2"])
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    m = build(cfg)
    wall = time.perf_counter() - t0
    stop.set()
    rows_in = m["counts"]["triplets"] + m["counts"]["rejects"]
    print(json.dumps({"rows_in": rows_in, "triplets": m["counts"]["triplets"], "wall_s": wall,
                      "rows_per_s": rows_in / wall, "driver_peak_rss_mb": peak["driver"] / 2**20,
                      "ray_total_peak_rss_mb": peak["all"] / 2**20,
                      "driver_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "timings": m["timings"]}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        one_build(*a.child)
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, python {platform.python_version()}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in a.rows:
            d = Path(tmp) / f"r{rows}"
            t0 = time.perf_counter()
            y = make_sources(d, rows)
            gen = time.perf_counter() - t0
            if rows == a.rows[0]:
                rates = bare_loop_rates(y)
                print("bare-loop rows/s (1 process): " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))
            p = subprocess.run([sys.executable, __file__, "--child", str(y), str(d / "out")],
                               capture_output=True, text=True, check=True)
            res = json.loads(p.stdout.strip().splitlines()[-1])
            res["generate_s"] = gen
            results[rows] = res
            print(f"{rows:>6} rows: {res['rows_per_s']:.1f} rows/s in {res['wall_s']:.1f}s "
                  f"(ingest {res['timings']['ingest_s']}s, plan {res['timings']['plan_s']}s, "
                  f"translate+caption+write {res['timings']['translate_caption_write_s']}s); "
                  f"driver peak RSS {res['driver_peak_rss_mb']:.0f} MiB, Ray total {res['ray_total_peak_rss_mb']:.0f} MiB")
    slowest = min(rates, key=rates.get)
    big = results[max(results)]
    print(f"slowest stage bare loop: {slowest} {rates[slowest]:.1f} rows/s; "
          f"Ray build at {max(results)} rows reaches {big['rows_per_s'] / rates[slowest]:.0%} of it")
    if len(results) > 1:
        small = results[min(results)]
        print(f"driver peak RSS ratio {max(results)}/{min(results)} rows: "
              f"{big['driver_peak_rss_mb'] / small['driver_peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
