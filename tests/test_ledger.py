"""Cost ledger, reruns that skip work, and the GPU budget cap."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as pads
import pytest

from fusionrs.build.ledger import read_ledgers
from fusionrs.build.pipeline import build
from fusionrs.cli import main as cli
from fusionrs.core.storage import Storage
from tests.conftest import sample_config

pytestmark = pytest.mark.slow


def ids(out: Path) -> list[str]:
    files = sorted(str(f) for f in (out / "triplets").glob("*.parquet"))
    return pads.dataset(files, format="parquet").to_table(columns=["sample_id"]).column(0).to_pylist() if files else []


def test_rerun_ledger_shows_skipped_work_and_no_new_spend(ray_local, sample_sources, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = sample_config(sample_sources, *[f"output={out}", "cost.cpu_hour_usd=0.5", "cost.gpu_hour_usd=4",
                                                      "translate.num_gpus=0.25"])
    build(cfg)
    build(cfg)
    first, second = read_ledgers(Storage(), str(out))
    assert first["status"] == second["status"] == "completed"
    assert first["stages"]["translate"]["gpu_s"] > 0 and first["totals"]["gpu_usd"] > 0
    for stage in ("ingest", "translate", "caption"):
        assert second["stages"][stage]["skipped"] == second["stages"][stage]["units"] > 0
    assert second["stages"]["translate"]["gpu_s"] == 0 and second["totals"]["api_usd"] == 0
    assert second["stages"]["translate"]["saved_gpu_s"] == pytest.approx(first["stages"]["translate"]["gpu_s"], rel=0.01)
    assert second["totals"]["saved_usd"] > 0
    assert cli(["cost", str(out)]) == 0
    text = capsys.readouterr().out
    assert first["run_id"] in text and second["run_id"] in text and "reused" in text


def test_gpu_budget_stops_cleanly_and_a_rerun_finishes(ray_local, sample_sources, tmp_path):
    out = tmp_path / "out"
    full = tmp_path / "full"
    base = ["translate.num_gpus=0.5", "translate.min_actors=1", "translate.max_actors=1", "cost.gpu_hour_usd=36000"]
    build(sample_config(sample_sources, *[f"output={full}", *base]))
    m1 = build(sample_config(sample_sources, *[f"output={out}", *base, "cost.max_gpu_usd=0.001"]))
    assert m1["status"] == "stopped:gpu_budget" and m1["pending_parts"]
    partial = ids(out)
    assert len(partial) < len(ids(full)) and len(partial) == len(set(partial))
    assert read_ledgers(Storage(), str(out))[-1]["stages"]["translate"]["stopped"] == len(m1["pending_parts"])
    m2 = build(sample_config(sample_sources, *[f"output={out}", *base]))
    assert m2["status"] == "completed" and sorted(ids(out)) == sorted(ids(full))
    assert m2["work"]["translate_parts_skipped"] == m2["parts"] - len(m1["pending_parts"])
