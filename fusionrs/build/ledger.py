"""The cost ledger: one JSON file per run under OUTPUT/ledger/, per stage and in total.

Per stage: rows, parts done and skipped, wall time, busy time, GPU-seconds (busy seconds of the
translate actors × GPUs per actor), API requests, cache hits and new spend, and on a rerun the
work skipped and what it would have cost (from the seconds and dollars recorded when it was
done). Dollars for compute come from `cost.gpu_hour_usd` / `cost.cpu_hour_usd`.

The ledger is written when the run ends: completed, failed, or interrupted by SIGTERM (what
`ray job stop` sends; Ray waits 3 s before SIGKILL, and writing one small JSON file takes
milliseconds). `fusionrs cost OUTPUT` prints it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field

from fusionrs.core.storage import Storage, join


@dataclass
class StageLedger:
    units: int = 0  # source units (ingest) or parts (later stages) seen
    skipped: int = 0  # already done by an earlier run: not redone, not paid again
    rows: int = 0
    wall_s: float = 0.0
    busy_s: float = 0.0  # sum of per-unit processing time
    gpu_s: float = 0.0
    gpu_usd: float = 0.0
    cpu_usd: float = 0.0
    api_requests: int = 0
    api_cache_hits: int = 0
    api_tokens_in: int = 0  # paid in this run
    api_tokens_out: int = 0
    api_usd: float = 0.0  # paid in this run
    saved_s: float = 0.0  # busy seconds that skipped work took when it was done
    saved_gpu_s: float = 0.0
    saved_usd: float = 0.0  # what the skipped work cost when it was done
    api_saved_usd: float = 0.0  # of which API responses reused from the cache
    stopped: int = 0  # units not done because a budget cap was reached
    gpus: float = 0.0  # per worker of this stage: prices busy seconds
    cpus: float = 0.0

    def add(self, stats: dict, prices: dict) -> None:
        """Sum one unit's or part's stats row (parts.py) and reprice: the ledger is complete
        after every part, so an interrupted run still writes what it did."""
        for k, v in stats.items():
            setattr(self, k, getattr(self, k) + v)
        gpu_rate, cpu_rate = prices.get("gpu_hour_usd", 0.0) / 3600, prices.get("cpu_hour_usd", 0.0) / 3600
        self.gpu_s = self.busy_s * self.gpus
        self.gpu_usd = self.gpu_s * gpu_rate
        self.cpu_usd = self.busy_s * self.cpus * cpu_rate
        self.saved_gpu_s = self.saved_s * self.gpus
        self.saved_usd = self.api_saved_usd + self.saved_s * (self.gpus * gpu_rate + self.cpus * cpu_rate)


@dataclass
class RunLedger:
    output: str
    config_fingerprint: str = ""
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6])
    started_unix: float = field(default_factory=time.time)
    finished_unix: float = 0.0
    status: str = "running"  # completed | interrupted | failed | stopped:<budget>
    stages: dict[str, StageLedger] = field(default_factory=lambda: {s: StageLedger() for s in ("ingest", "translate", "caption", "write")})
    prices: dict = field(default_factory=dict)

    def totals(self) -> dict:
        s = self.stages.values()
        spent = sum(x.gpu_usd + x.cpu_usd + x.api_usd for x in s)
        return {"usd": round(spent, 6), "gpu_usd": round(sum(x.gpu_usd for x in s), 6),
                "api_usd": round(sum(x.api_usd for x in s), 6), "cpu_usd": round(sum(x.cpu_usd for x in s), 6),
                "gpu_s": round(sum(x.gpu_s for x in s), 3), "saved_usd": round(sum(x.saved_usd for x in s), 6),
                "api_requests": sum(x.api_requests for x in s),
                "api_tokens": sum(x.api_tokens_in + x.api_tokens_out for x in s)}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["wall_s"] = round((self.finished_unix or time.time()) - self.started_unix, 3)
        d["totals"] = self.totals()
        return d

    def write(self, storage: Storage, status: str | None = None) -> str:
        if status:
            self.status = status
        self.finished_unix = time.time()
        uri = join(self.output, "ledger", f"{self.run_id}.json")
        storage.write_text(uri, json.dumps(self.to_dict(), indent=1, sort_keys=True))
        return uri


def read_ledgers(storage: Storage, output: str) -> list[dict]:
    files = storage.list_files(join(output, "ledger"), "*.json")
    return [json.loads(storage.read_bytes(f)) for f in files]


def format_ledgers(runs: list[dict]) -> str:
    lines = []
    cols = ("stage", "units", "skipped", "rows", "wall_s", "busy_s", "gpu_s", "gpu_$", "api_req", "cache_hits", "api_$",
            "cpu_$", "saved_s", "saved_$")
    head = "{:<10}{:>6}{:>8}{:>7}{:>8}{:>8}{:>8}{:>8}{:>8}{:>11}{:>8}{:>8}{:>8}{:>8}"
    for r in runs:
        t = r["totals"]
        lines.append(f"run {r['run_id']}  {r['status']}  {r['wall_s']:.1f} s  config {r['config_fingerprint']}")
        lines.append(head.format(*cols))
        for name in ("ingest", "translate", "caption", "write"):
            s = r["stages"][name]
            lines.append(head.format(name, s["units"], s["skipped"], s["rows"], f"{s['wall_s']:.1f}", f"{s['busy_s']:.1f}",
                                     f"{s['gpu_s']:.1f}", f"{s['gpu_usd']:.4f}", s["api_requests"], s["api_cache_hits"],
                                     f"{s['api_usd']:.4f}", f"{s['cpu_usd']:.4f}", f"{s['saved_s']:.1f}", f"{s['saved_usd']:.4f}"))
        lines.append(f"total: ${t['usd']:.4f} spent (GPU ${t['gpu_usd']:.4f}, API ${t['api_usd']:.4f}, CPU ${t['cpu_usd']:.4f}); "
                     f"${t['saved_usd']:.4f} of earlier work reused; {t['api_requests']} API requests, "
                     f"{t.get('api_tokens', 0)} tokens")
        lines.append("")
    if len(runs) > 1:
        lines.append(f"all {len(runs)} runs: ${sum(r['totals']['usd'] for r in runs):.4f} spent")
    return "\n".join(lines)


def format_forecast_vs_spent(forecast: dict | None, runs: list[dict]) -> str:
    """The plan's forecast (manifest.json) beside what all runs spent and reused."""
    if not forecast:
        return ""
    last = runs[-1]["stages"]["translate"] if runs else {"gpu_s": 0.0, "saved_gpu_s": 0.0}
    gpu_s = last["gpu_s"] + last["saved_gpu_s"]  # every translation of the last run: done now or reused
    spent = {"translate GPU-hours": (forecast["translate_gpu_hours"], round(gpu_s / 3600, 3)),
             "API requests": (forecast["api_requests"], sum(r["totals"]["api_requests"] for r in runs)),
             "API tokens": (forecast["api_tokens_in"] + forecast["api_tokens_out"],
                            sum(r["totals"].get("api_tokens", 0) for r in runs)),
             "API $": (forecast["api_usd"], round(sum(r["totals"]["api_usd"] for r in runs), 4))}
    lines = ["forecast (at plan time) vs spent (all runs; translation: the last run's done + reused work)",
             f"{'':<22}{'forecast':>14}{'spent':>14}"]
    lines += [f"{k:<22}{f:>14,}{v:>14,}" for k, (f, v) in spent.items()]
    return "\n".join(lines)
