"""A build with caption.backend=openai against the local chat-completions server."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from fusionrs.build.pipeline import build
from fusionrs.dev.fake_openai import FakeOpenAI
from tests.conftest import API_KEY, API_KEY_ENV, sample_config

pytestmark = pytest.mark.slow
MODEL = "qwen/qwen2.5-vl-72b-instruct"


def triplets(out: Path):
    files = sorted(str(f) for f in (out / "triplets").glob("*.parquet"))
    return pads.dataset(files, format="parquet").to_table(
        columns=["sample_id", "ir_aware_caption", "ir_caption_status", "ir_caption_cost_usd"]).to_pylist()


def test_openai_build_captions_subset_and_rerun_pays_nothing(ray_local, sample_sources, tmp_path, capfd):
    with FakeOpenAI(api_key=API_KEY, model=MODEL) as srv:
        srv.fault_next(["429:1", "500", "error200", "badjson", "colour"])
        out = tmp_path / "out"
        overrides = [f"output={out}", "caption.backend=openai", f"caption.base_url={srv.base_url}",
                     f"caption.api_key_env={API_KEY_ENV}", "caption.requests_per_minute=6000",
                     "caption.concurrency=8", "caption.max_actors=2"]
        cfg = sample_config(sample_sources, *overrides)
        m1 = build(cfg)
        rows = triplets(out)
        selected = [r for r in rows if r["ir_caption_status"] != "not_selected"]
        assert selected and all(r["ir_caption_status"] == "accepted" for r in selected), \
            {r["ir_caption_status"] for r in selected}
        assert not srv.problems
        paid = len(srv.requests)
        paid_ok = sum(1 for r in srv.requests if r["status"] == 200 and r["fault"] in ("ok", "colour"))
        assert m1["work"]["caption_requests"] == paid
        assert m1["counts"]["api_cost_usd"] == pytest.approx(0.0005 * (len(selected) + 1))  # + the regenerated one

        m2 = build(cfg)  # same build again: no request for anything already captioned
        assert len(srv.requests) == paid
        assert m2["work"]["api_new_spend_usd"] == 0.0 and m2["work"]["caption_parts_skipped"] > 0
        from fusionrs.build.ledger import read_ledgers
        from fusionrs.core.storage import Storage

        l1, l2 = read_ledgers(Storage(), str(out))
        assert l1["stages"]["caption"]["api_tokens_in"] == 900 * paid_ok and l1["stages"]["caption"]["api_tokens_out"] == 40 * paid_ok
        assert l2["stages"]["caption"]["api_tokens_in"] == 0 and l2["totals"]["api_usd"] == 0
        assert triplets(out) == rows

    # The sentinel key appears in no output file and no captured log line.
    captured = capfd.readouterr()
    assert API_KEY not in captured.out + captured.err
    for f in out.rglob("*"):
        if f.is_file():
            assert API_KEY.encode() not in f.read_bytes(), f


def test_402_keeps_completed_work_and_a_rerun_finishes(ray_local, sample_sources, tmp_path):
    with FakeOpenAI(api_key=API_KEY, model=MODEL) as srv:
        srv.pay_after = 10
        out = tmp_path / "out"
        cfg = sample_config(sample_sources, *[
            f"output={out}", "caption.backend=openai", f"caption.base_url={srv.base_url}",
            f"caption.api_key_env={API_KEY_ENV}", "caption.requests_per_minute=0", "caption.concurrency=2",
            "caption.parts_per_call=1"])
        m1 = build(cfg)
        st = [r["ir_caption_status"] for r in triplets(out)]
        assert st.count("accepted") == 10
        assert {s for s in st if s not in ("accepted", "not_selected")} <= {"failed:payment_required", "failed:stopped_after_402"}
        assert len(srv.requests) <= 10 + 2  # bounded extra calls after the breaker opened
        assert m1["work"]["caption_rows_unfinished"] > 0
        # Credits topped up: the rerun asks only for the rows that were not captioned.
        srv.pay_after = None
        first_requests = len(srv.requests)
        m2 = build(cfg)
        st2 = [r["ir_caption_status"] for r in triplets(out)]
        assert all(s in ("accepted", "not_selected") for s in st2)
        assert len(srv.requests) - first_requests == st.count("failed:payment_required") + st.count("failed:stopped_after_402")
        assert m2["work"]["caption_cache_hits"] >= 10
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["captioner"]["backend"] == "openai"
