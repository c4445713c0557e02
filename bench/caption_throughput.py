"""Caption API throughput against the local chat-completions server with injected latency.

    python bench/caption_throughput.py [--latency 0.2] [--requests 2000]

For each concurrency C, the bound is C / latency requests/s (no client can beat it); we report
achieved requests/s and its share of the bound, on this machine. Client and server share its
cores. Also the cost per 1,000 captions at the configured prices.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from fusionrs.build.caption.openai_api import OpenAICaptioner
from fusionrs.config.build import CaptionConfig, IRFilterConfig
from fusionrs.core.storage import Storage
from fusionrs.dev.sample import draw_scene, jpeg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, nargs="*", default=[16, 32, 64, 128, 256])
    ap.add_argument("--seconds", type=float, default=6.0, help="target duration per concurrency")
    ap.add_argument("--price-in", type=float, default=0.25, help="$/M input tokens (Qwen2.5-VL-72B on OpenRouter, check current)")
    ap.add_argument("--price-out", type=float, default=0.75)
    a = ap.parse_args()
    os.environ["BENCH_KEY"] = "bench"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; server latency {a.latency * 1000:.0f} ms; "
          "client and server on the same machine")
    ir = jpeg(draw_scene("port", np.random.default_rng(0)).convert("L").convert("RGB").resize((128, 128)))
    # The server runs in its own process, as a real provider would: no shared GIL with the client.
    proc = subprocess.Popen([sys.executable, "-m", "fusionrs.testing.fake_openai", "--api-key", "bench", "--model", "m",
                             "--latency", str(a.latency), "--no-cost"], stdout=subprocess.PIPE, text=True)
    base_url = f"http://127.0.0.1:{int(proc.stdout.readline())}/v1"
    try:
        print(f"{'concurrency':>11} {'requests':>8} {'req/s':>8} {'bound':>8} {'share':>6}")
        for c in a.concurrency:
            n = int(c / a.latency * a.seconds)
            cfg = CaptionConfig(backend="openai", base_url=base_url, model="m", api_key_env="BENCH_KEY",
                                concurrency=c, requests_per_minute=0, regenerate=0, timeout_s=60,
                                price_in_per_mtok=a.price_in, price_out_per_mtok=a.price_out)
            with tempfile.TemporaryDirectory() as tmp:
                cap = OpenAICaptioner(cfg, IRFilterConfig(), Storage(), tmp)
                batch = {"sample_id": [f"s{i}" for i in range(n)], "ir_jpeg": [ir] * n,
                         "caption": [f"many boats are docked in harbor number {i}" for i in range(n)]}
                t0 = time.perf_counter()
                out = cap(batch)
                dt = time.perf_counter() - t0
            ok = out["ir_caption_raw_status"].count("ok")
            rate, bound = n / dt, c / a.latency
            print(f"{c:>11} {n:>8} {rate:>8.1f} {bound:>8.1f} {rate / bound:>6.0%}" + ("" if ok == n else f"  ({n - ok} failed)"))
        per_1k = 1000 * float(np.mean(out["ir_caption_cost_usd"]))
        print(f"cost per 1,000 captions at ${a.price_in}/M in, ${a.price_out}/M out "
              f"(900 prompt + 40 completion tokens each, as the server reports): ${per_1k:.2f}")
    finally:
        proc.kill()


if __name__ == "__main__":
    main()
