"""Training metrics from rank 0: one console line, one JSONL record and TensorBoard scalars per
`run.log_every` optimizer steps (and validation scores per epoch).

Files live under the run: `<storage_path>/<name>/metrics/metrics.jsonl` and TensorBoard event
files beside it (`tensorboard --logdir <storage_path>/<name>/metrics`). On remote storage
(s3://) they are written locally and uploaded whole on every flush: they are small.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path

from fusionrs.config.train import TrainConfig
from fusionrs.core.storage import Storage, join

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
        shown = "  ".join(f"{k} {v:.4g}" for k, v in clean.items())
        print(f"[{self.name}] step {step}  {prefix.rstrip('/')}  {shown}", flush=True)
        if time.time() - self.last_flush > 30:
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
        if self.remote:
            shutil.rmtree(self.dir, ignore_errors=True)


def read_metrics(cfg_or_dir) -> list[dict]:
    """The JSONL records of a run (local storage), for reports and tests."""
    d = Path(metrics_dir(cfg_or_dir)) if isinstance(cfg_or_dir, TrainConfig) else Path(cfg_or_dir)
    f = d / "metrics.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.exists() else []
