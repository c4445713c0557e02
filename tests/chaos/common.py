"""Helpers shared by the chaos scripts (each runs in its own process with its own Ray)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.dataset as pads


def output_ids(out: Path) -> list[str]:
    files = sorted(str(f) for d in ("triplets", "rejects") for f in (out / d).glob("*.parquet"))
    return pads.dataset(files, format="parquet").to_table(columns=["sample_id"]).column(0).to_pylist() if files else []


def expected_ids(build_yaml: Path) -> set[str]:
    from fusionrs.config import load_config
    from fusionrs.readers import plan_units, read_unit
    from fusionrs.storage import Storage

    cfg = load_config(build_yaml, ["output=/tmp/unused"])
    st = Storage()
    return {r.sample_id for s in cfg.sources for u in plan_units(s, st, cfg.ingest.records_per_unit) for r in read_unit(u, st)}


def wait_for(pred, timeout: float, every: float = 0.2) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(every)
    return False


def report(**kw) -> None:
    print("RESULT " + json.dumps(kw), flush=True)
