"""Starting (or joining) Ray the same way for every job, with a quiet console.

    start_ray(address="", log_file="out/demo/build/logs/ray.log")

Address: the given one, else RAY_ADDRESS, else a new local instance — never whatever cluster a
stale `ray_current_cluster` file names (ray.init's own fallback). Console: quiet by default —
Ray's and Ray Data's INFO lines (progress logs, execution plans) go to `log_file`, workers'
stdout stays in Ray's session logs, and our own progress lines and summaries are what the user
sees. `--verbose` (or FUSIONRS_VERBOSE=1) brings everything back to the console.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ray

RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune")
# Warnings that say nothing to a user of this tool: to the log file only.
NOISE = ("Token authentication is enabled", "Progress bars disabled")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(NOISE)


def verbose() -> bool:
    return os.environ.get("FUSIONRS_VERBOSE", "") == "1"


def start_ray(address: str = "", num_cpus: int = 0, log_file: str | None = None) -> None:
    if ray.is_initialized():
        return
    loud = verbose()
    quiet_ray_logging(log_file)  # before init: its own start-up lines go to the file too
    address = address or os.environ.get("RAY_ADDRESS", "")
    kwargs = {"log_to_driver": loud, "logging_level": logging.INFO if loud else logging.WARNING}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", include_dashboard=False, **({"num_cpus": num_cpus} if num_cpus else {}), **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.max_errored_blocks = 0  # never drop a block silently: per-row errors are reject rows
    ctx.enable_progress_bars = loud
    ctx.print_on_execution_start = loud
    quiet_ray_logging(log_file)  # again: Ray Data sets up its loggers on first use


def quiet_ray_logging(log_file: str | None) -> None:
    """Ray's INFO lines to `log_file` (local path), only warnings and errors to the console."""
    if verbose():
        return
    handler = None
    if log_file and "://" not in log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        for h in logger.handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                h.setLevel(logging.WARNING)
                if not any(isinstance(f, _DropNoise) for f in h.filters):
                    h.addFilter(_DropNoise())
        # "ray" gets the file; a child that does not propagate to it (Ray Data's) gets it too.
        if handler is not None and (name == "ray" or not logger.propagate) and not any(
                isinstance(h, logging.FileHandler) and h.baseFilename == handler.baseFilename for h in logger.handlers):
            logger.setLevel(logging.INFO)
            logger.addHandler(handler)
