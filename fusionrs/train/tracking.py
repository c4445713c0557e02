"""MLflow and W&B for a training run, through Ray Train's own integrations (`setup_mlflow`,
`setup_wandb`), opened by rank 0's MetricsLog when the config's `tracking` section asks for them.

Each tracker gets the run's flattened config as parameters and the same metrics as TensorBoard
(`train/loss`, `train/lr`, ..., `val/...`), at the same optimizer steps. A restarted run (worker
failure, resubmission) opens a new tracker run with the same name. W&B's API key is read by W&B
from the nodes' environment (WANDB_API_KEY); it is never part of a config, so it never reaches a
log, a checkpoint or the parameters sent to a tracker.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

from fusionrs.config.train import TrainConfig


def flat_config(cfg: TrainConfig) -> dict[str, str | int | float | bool]:
    """`section.key` → value (lists and dicts as text), for trackers' parameter tables."""
    out: dict = {}

    def walk(prefix: str, value) -> None:
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                walk(f"{prefix}{f.name}.", getattr(value, f.name))
        elif isinstance(value, (str, int, float, bool)) or value is None:
            out[prefix[:-1]] = value if value is not None else ""
        else:
            out[prefix[:-1]] = str(value)

    walk("", cfg)
    return out


class MlflowTracker:
    def __init__(self, cfg: TrainConfig):
        from ray.air.integrations.mlflow import setup_mlflow

        t = cfg.tracking
        if t.mlflow_uri.startswith("file:"):  # MLflow 3 refuses its file store unless asked: the config asks
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        # rank_zero_only=False: only rank 0 opens trackers (MetricsLog), and Ray Train V2's
        # context is not the session this helper inspects.
        self.mlflow = setup_mlflow(config=flat_config(cfg), tracking_uri=t.mlflow_uri, experiment_name=t.mlflow_experiment,
                                   run_name=cfg.run.name, create_experiment_if_not_exists=True, rank_zero_only=False)

    def log(self, values: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(values, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


class WandbTracker:
    def __init__(self, cfg: TrainConfig, local_dir: str):
        from ray.air.integrations.wandb import setup_wandb

        t = cfg.tracking
        if t.wandb_mode:  # read from the environment by the integration (offline needs no API key)
            os.environ["WANDB_MODE"] = t.wandb_mode
        os.makedirs(local_dir, exist_ok=True)
        self.run = setup_wandb(config=flat_config(cfg), project=t.wandb_project, rank_zero_only=False,
                               trial_id=None, trial_name=cfg.run.name, group=cfg.run.name, dir=local_dir,
                               resume=None)  # a new W&B run per (re)start: steps restart below the last logged

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def wandb_dir(cfg: TrainConfig) -> str:
    """W&B's own files (offline runs to `wandb sync`): beside the run on local storage, else in
    the worker's temp folder (W&B uploads online runs itself)."""
    if "://" in cfg.run.storage_path:
        return os.path.join(tempfile.gettempdir(), "fusionrs-wandb", cfg.run.name)
    return os.path.join(cfg.run.storage_path, cfg.run.name, "wandb")


def open_trackers(cfg: TrainConfig) -> list:
    """The trackers the config asks for (none by default)."""
    trackers = []
    if cfg.tracking.mlflow_uri:
        trackers.append(MlflowTracker(cfg))
    if cfg.tracking.wandb_project:
        trackers.append(WandbTracker(cfg, wandb_dir(cfg)))
    return trackers
