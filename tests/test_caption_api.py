"""The `openai` captioner against a real local HTTP server with injected faults."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusionrs.build.caption.openai_api import OpenAICaptioner, parse_caption, parse_retry_after
from fusionrs.config.build import CaptionConfig, IRFilterConfig
from fusionrs.core.storage import Storage
from fusionrs.dev.fake_openai import FakeOpenAI
from fusionrs.dev.sample import draw_scene, jpeg
from tests.conftest import API_KEY, API_KEY_ENV

MODEL = "qwen/qwen2.5-vl-72b-instruct"
CAPTIONS = ["many boats are docked in the harbor near the pier",
            "a dense forest with many trees on the hills",
            "a straight highway passes through the bare land",
            "several airplanes are parked near the runway",
            "many cars are parked in a large parking lot",
            "a river goes through the farmland with crops",
            "a sandy beach lies next to the sea with waves",
            "storage tanks stand in rows in an industrial area"]


@pytest.fixture
def server():
    with FakeOpenAI(api_key=API_KEY, model=MODEL) as s:
        yield s


def captioner(server, tmp_path, **kw) -> OpenAICaptioner:
    kw = {"requests_per_minute": 0, "timeout_s": 5, "max_retries": 4, "model": MODEL, **kw}
    cfg = CaptionConfig(backend="openai", base_url=server.base_url, api_key_env=API_KEY_ENV, **kw)
    return OpenAICaptioner(cfg, IRFilterConfig(), Storage(), str(tmp_path / "cache"))


def batch(n=len(CAPTIONS)):
    return {"sample_id": [f"s{i}" for i in range(n)], "caption": CAPTIONS[:n],
            "ir_jpeg": [jpeg(draw_scene("meadow", np.random.default_rng(i)).convert("L").convert("RGB")) for i in range(n)]}


def test_happy_path_checks_protocol_and_costs(server, tmp_path):
    out = captioner(server, tmp_path)(batch())
    assert out["ir_caption_raw_status"] == ["ok"] * 8 and not server.problems
    assert all(c and "bright" in c for c in out["ir_aware_caption"])
    assert out["ir_caption_cost_usd"] == [pytest.approx(0.0005)] * 8 and len(server.requests) == 8


def test_retry_after_is_waited(server, tmp_path):
    server.faults_for("harbor", ["429:1", "429:1"])
    t0 = time.time()
    out = captioner(server, tmp_path)(batch(1))
    assert out["ir_caption_raw_status"] == ["ok"]
    times = [r["t"] for r in server.requests_for("harbor")]
    assert len(times) == 3 and times[1] - times[0] >= 0.95 and times[2] - times[1] >= 0.95
    assert time.time() - t0 >= 1.9


@pytest.mark.parametrize("faults", [["500", "502", "503"], ["408"], ["error200", "badjson"], ["empty", "finish_error"]])
def test_transient_failures_are_retried(server, tmp_path, faults):
    server.faults_for("harbor", faults)
    out = captioner(server, tmp_path)(batch(2))
    assert out["ir_caption_raw_status"] == ["ok", "ok"]
    assert len(server.requests_for("harbor")) == len(faults) + 1


def test_retries_are_bounded(server, tmp_path):
    server.faults_for("harbor", ["500"] * 10)
    out = captioner(server, tmp_path, max_retries=2)(batch(1))
    assert out["ir_caption_raw_status"] == ["failed:retries_exhausted:http_500"]
    assert len(server.requests_for("harbor")) == 3 and out["ir_caption_requests"] == [3]


def test_hung_request_times_out_and_is_retried(server, tmp_path):
    server.hang_s = 5
    server.faults_for("harbor", ["hang"])
    t0 = time.time()
    out = captioner(server, tmp_path, timeout_s=0.5)(batch(1))
    assert out["ir_caption_raw_status"] == ["ok"] and time.time() - t0 < 4


def test_client_errors_are_final(server, tmp_path):
    server.faults_for("harbor", ["400"])
    out = captioner(server, tmp_path)(batch(2))
    assert out["ir_caption_raw_status"][0] == "failed:http_400" and out["ir_caption_raw_status"][1] == "ok"
    assert len(server.requests_for("harbor")) == 1


def test_wrong_key_is_401_and_final(server, tmp_path, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "wrong")
    out = captioner(server, tmp_path)(batch(2))
    assert out["ir_caption_raw_status"] == ["failed:http_401"] * 2 and len(server.requests) == 2


def test_fenced_json_is_parsed(server, tmp_path):
    server.faults_for("harbor", ["fenced"])
    out = captioner(server, tmp_path)(batch(1))
    assert out["ir_caption_raw_status"] == ["ok"] and out["ir_aware_caption"][0].startswith("Many boats")


def test_402_stops_within_bounded_extra_calls(server, tmp_path):
    server.pay_after = 3
    out = captioner(server, tmp_path, concurrency=2)(batch())
    st = out["ir_caption_raw_status"]
    assert st.count("ok") == 3
    assert set(st) - {"ok"} <= {"failed:payment_required", "failed:stopped_after_402"}
    # After the first 402, at most the requests already in flight (concurrency - 1) reach the server.
    assert len(server.requests) <= 3 + 2


def test_budget_stops_new_requests(server, tmp_path):
    out = captioner(server, tmp_path, concurrency=1, budget_usd=0.0015)(batch())
    assert out["ir_caption_raw_status"].count("ok") == 3
    assert out["ir_caption_raw_status"][3:] == ["failed:budget_exhausted"] * 5 and len(server.requests) == 3


def test_global_pace(server, tmp_path):
    cap = captioner(server, tmp_path, concurrency=8)
    cap.limiter._l.req_interval = 60 / 300  # 300 requests/min → 0.2 s apart
    t0 = time.time()
    cap(batch())
    assert time.time() - t0 >= 7 * 0.2 - 0.05


def test_rerun_pays_nothing_and_prompt_change_does(server, tmp_path):
    first = captioner(server, tmp_path)(batch())
    n = len(server.requests)
    again = captioner(server, tmp_path)(batch())
    assert len(server.requests) == n and again["ir_aware_caption"] == first["ir_aware_caption"]
    assert again["ir_caption_new_cost_usd"] == [0.0] * 8 and again["ir_caption_cost_usd"] == first["ir_caption_cost_usd"]
    new_prompt = CaptionConfig().prompt.replace("one concise", "one short")
    captioner(server, tmp_path, prompt=new_prompt)(batch())
    assert len(server.requests) == 2 * n


def test_filtered_caption_is_regenerated(server, tmp_path):
    server.faults_for("harbor", ["colour"])
    out = captioner(server, tmp_path, regenerate=1)(batch(1))
    assert "Red" not in out["ir_aware_caption"][0] and len(server.requests) == 2
    assert out["ir_caption_cost_usd"] == [pytest.approx(0.001)]  # both attempts were paid for
    server.faults_for("harbor", ["colour"])
    out = captioner(server, tmp_path / "b", regenerate=0)(batch(1))
    assert out["ir_aware_caption"][0].startswith("Red")  # kept; the build's filter rejects it


def test_api_key_never_leaks(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    server.faults_for("harbor", ["500", "400"])
    server.faults_for("forest", ["badjson", "error200"])
    server.pay_after = 5
    out = captioner(server, tmp_path)(batch())
    blobs = [caplog.text, repr(out["ir_caption_raw_status"]), repr(out["ir_aware_caption"])]
    blobs += [p.read_text() for p in Path(tmp_path / "cache").rglob("*.jsonl")]
    assert len(blobs) > 3 and not any(API_KEY in b for b in blobs)


def test_parsers():
    assert parse_caption('{"ir_aware_caption": "A b."}') == "A b."
    assert parse_caption('Sure!\n```json\n{"ir_aware_caption": "x y"}\n```') == "x y"
    assert parse_caption('{"ir_aware_caption": "unterminated') is None
    assert parse_caption('"ir_aware_caption": "loose \\"quoted\\" text"') == 'loose "quoted" text'
    assert parse_caption("") is None and parse_caption('{"caption": "x"}') is None
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "9999"}) == 120.0
    assert parse_retry_after({}) is None


def grey(level: int, size=(96, 96)) -> bytes:
    return jpeg(Image.new("RGB", size, (level, level, level)), q=95)


def test_cache_key_holds_the_image_the_prompt_and_the_model(tmp_path):
    """Two rows with the same caption and different images are two paid requests with their own
    answers; the same image and caption again is no request; a changed prompt or model is a new key."""
    from fusionrs.dev.fake_openai import image_level

    other = "qwen/other-model"
    with FakeOpenAI(api_key=API_KEY, model=(MODEL, other)) as srv:
        cap = captioner(srv, tmp_path)
        same_caption = {"sample_id": ["a", "b"], "caption": [CAPTIONS[0]] * 2, "ir_jpeg": [grey(40), grey(200)]}
        out = cap(same_caption)
        assert len(srv.requests) == 2  # one paid request per image, not one per caption
        levels = [image_level(Image.open(io.BytesIO(j))) for j in same_caption["ir_jpeg"]]
        for text, level in zip(out["ir_aware_caption"], levels):
            assert f"grey level of {level} percent" in text  # each row got the answer about its own image
        again = captioner(srv, tmp_path)({**same_caption, "sample_id": ["c", "d"]})
        assert len(srv.requests) == 2 and again["ir_aware_caption"] == out["ir_aware_caption"]  # cached
        captioner(srv, tmp_path, prompt=CaptionConfig().prompt.replace("one concise", "one short"))(same_caption)
        assert len(srv.requests) == 4  # a changed prompt is a new key
        captioner(srv, tmp_path, model=other)(same_caption)
        assert len(srv.requests) == 6  # a changed model is a new key


def test_what_the_captioner_sends_downscaled_image_and_rgb(server, tmp_path):
    b = {"sample_id": ["a"], "caption": [CAPTIONS[1]], "ir_jpeg": [grey(90, (400, 200))], "rgb_jpeg": [grey(120, (300, 300))]}
    captioner(server, tmp_path / "1", image_max_side=128)(b)
    assert server.requests[-1]["image_sizes"] == [(128, 64)]  # IR only, longest side 128
    captioner(server, tmp_path / "2", image_max_side=128, include_rgb=True)(b)
    assert server.requests[-1]["image_sizes"] == [(128, 64), (128, 128)]  # IR, then RGB
    captioner(server, tmp_path / "3", image_max_side=512)(b)
    assert server.requests[-1]["image_sizes"] == [(400, 200)]  # small enough: sent as it is


def test_tokens_per_minute_pacing(server, tmp_path):
    # Each request reserves max_tokens + 800 estimated tokens: (180 + 800) at 5 requests/s.
    cap = captioner(server, tmp_path, concurrency=8, tokens_per_minute=980 * 5 * 60)
    t0 = time.time()
    cap(batch())
    assert time.time() - t0 >= 7 * 0.2 - 0.05


def test_price_from_token_counts_when_the_api_reports_no_cost(server, tmp_path):
    server.cost = None
    out = captioner(server, tmp_path, price_in_per_mtok=1.0, price_out_per_mtok=2.0)(batch(2))
    assert out["ir_caption_cost_usd"] == [pytest.approx((900 * 1.0 + 40 * 2.0) / 1e6)] * 2  # the server's usage


def test_retry_after_as_an_http_date(server, tmp_path):
    import email.utils

    assert parse_retry_after({"retry-after": email.utils.formatdate(time.time() + 3, usegmt=True)}) == \
        pytest.approx(3, abs=1.01)
    server.faults_for("harbor", ["429date:2"])
    out = captioner(server, tmp_path)(batch(1))
    t = [r["t"] for r in server.requests_for("harbor")]
    assert out["ir_caption_raw_status"] == ["ok"] and len(t) == 2 and t[1] - t[0] >= 1.0
