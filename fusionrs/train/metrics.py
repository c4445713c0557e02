"""Training metrics from rank 0: one console line, one JSONL record and TensorBoard scalars per
`run.log_every` optimizer steps (and validation scores per epoch); MLflow and W&B too when the
config's `tracking` section names them (tracking.py).

Files live under the run: `<storage_path>/<name>/metrics/metrics.jsonl` and TensorBoard event
files beside it (`tensorboard --logdir <storage_path>/<name>/metrics`). On remote storage
(s3://) they are written locally and uploaded whole on every flush: they are small.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import threading
import time
from pathlib import Path

from fusionrs.config.train import TrainConfig
from fusionrs.core.storage import Storage, join
from fusionrs.train.tracking import open_trackers

try:  # TensorBoard is a dependency; without it the JSONL file still has everything
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # pragma: no cover
    SummaryWriter = None


def metrics_dir(cfg: TrainConfig) -> str:
    return join(cfg.run.storage_path, cfg.run.name, "metrics")


class MetricsLog:
    def __init__(self, cfg: TrainConfig, rank: int):
        self.active = rank == 0
        if not self.active:
            return
        self.remote = "://" in cfg.run.storage_path
        self.uri = metrics_dir(cfg)
        self.dir = Path(tempfile.mkdtemp(prefix="fusionrs-metrics-")) if self.remote else Path(self.uri)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = cfg.run.name
        self.tb = SummaryWriter(str(self.dir)) if SummaryWriter else None
        self.jsonl = open(self.dir / "metrics.jsonl", "a")
        self.trackers = open_trackers(cfg)
        self.last_flush = 0.0

    def write(self, step: int, values: dict, prefix: str = "train/") -> None:
        if not self.active or not values:
            return
        clean = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        self.jsonl.write(json.dumps({"step": step, "time": round(time.time(), 3),
                                     **{prefix + k: v for k, v in clean.items()}}) + "\n")
        if self.tb:
            for k, v in clean.items():
                self.tb.add_scalar(prefix + k, v, step)
        for tracker in self.trackers:
            tracker.log({prefix + k: v for k, v in clean.items()}, step)
        if self.remote:  # no driver can tail the file: say it here (it reaches the job's logs)
            print(format_record(self.name, {"step": step, **{prefix + k: v for k, v in clean.items()}}), flush=True)
        if time.time() - self.last_flush > (30 if self.remote else 2):
            self.flush()

    def flush(self) -> None:
        if not self.active:
            return
        self.jsonl.flush()
        if self.tb:
            self.tb.flush()
        if self.remote:
            storage = Storage.from_env()
            for f in self.dir.iterdir():
                storage.write_bytes(join(self.uri, f.name), f.read_bytes())
        self.last_flush = time.time()

    def close(self) -> None:
        if not self.active:
            return
        self.flush()
        self.jsonl.close()
        if self.tb:
            self.tb.close()
        for tracker in self.trackers:
            tracker.close()
        if self.remote:
            shutil.rmtree(self.dir, ignore_errors=True)


def format_record(run: str, record: dict) -> str:
    """One console line per metrics record: `[run] step 40  train  loss 1.23  lr 0.001 ...`."""
    groups: dict[str, list[str]] = {}
    for k, v in record.items():
        if "/" in k and isinstance(v, (int, float)):
            kind, name = k.split("/", 1)
            groups.setdefault(kind, []).append(f"{name} {v:.4g}")
    return f"[{run}] step {record.get('step')}  " + "  ".join(f"{kind}: {' '.join(v)}" for kind, v in groups.items())


class MetricsTail:
    """The driver's view of a local run: prints each new metrics.jsonl record as one line while
    training runs (workers' own stdout stays in their logs)."""

    def __init__(self, cfg: TrainConfig, every_s: float = 1.0):
        self.path = Path(metrics_dir(cfg)) / "metrics.jsonl"
        self.run, self.every_s = cfg.run.name, every_s
        self.offset = self.path.stat().st_size if self.path.exists() else 0  # a resumed run: only new lines
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self._read()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._read()

    def _read(self) -> None:
        if not self.path.exists():
            return
        with open(self.path) as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self.offset += len(complete.encode())
        for line in complete.splitlines():
            if line.strip():
                print(format_record(self.run, json.loads(line)), flush=True)


def read_metrics(cfg_or_dir) -> list[dict]:
    """The JSONL records of a run (local storage), for reports and tests."""
    d = Path(metrics_dir(cfg_or_dir)) if isinstance(cfg_or_dir, TrainConfig) else Path(cfg_or_dir)
    f = d / "metrics.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.exists() else []
