"""Chaos: node loss, driver kill + rerun, `ray job stop` + resubmit, autoscaling GPU nodes.

Each scenario runs in its own processes with its own Ray, so the session's Ray is untouched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusionrs.dev.fake_openai import FakeOpenAI
from tests.chaos.common import expected_ids, kill_head, output_ids, start_head, wait_for
from tests.conftest import API_KEY, API_KEY_ENV, sample_build_args

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def env(**extra) -> dict:
    e = dict(os.environ, PYTHONPATH=str(REPO), RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", **extra)
    e.pop("RAY_ADDRESS", None)
    e["PATH"] = f"{BIN}:{e['PATH']}"
    return e


def run_script(name: str, *args, timeout=420) -> dict:
    p = subprocess.run([sys.executable, str(REPO / "tests" / "chaos" / name), *map(str, args)], env=env(),
                       capture_output=True, text=True, timeout=timeout, cwd=REPO)
    line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line, f"{name} failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return json.loads(line[len("RESULT "):])


def test_worker_node_lost_mid_build(sample_sources, tmp_path):
    r = run_script("node_loss.py", sample_sources, tmp_path / "out")
    assert r["started"] and r["finished"], r
    assert r["n"] == r["unique"] and r["exact"], r


@pytest.mark.isolated
def test_translate_pool_demand_adds_gpu_nodes(sample_sources, tmp_path):
    r = run_script("autoscale.py", sample_sources, tmp_path / "out")
    assert r["gpus_before"] == 0 and r["gpu_nodes_added"] >= 1 and r["status"] == "completed", r
    assert r["triplets"] > 0


def _job(args, **kw):
    return subprocess.run([str(BIN / "python"), "-m", "jobs.build_dataset", *args], env=env(), cwd=REPO, **kw)


def test_driver_killed_then_rerun_pays_nothing_twice(sample_sources, tmp_path):
    out = tmp_path / "out"
    with FakeOpenAI(api_key=API_KEY, model="qwen/qwen2.5-vl-72b-instruct", delay_s=0.25) as srv:
        args = [*sample_build_args(sample_sources), f"output={out}", "caption.backend=openai",
                f"caption.base_url={srv.base_url}", f"caption.api_key_env={API_KEY_ENV}", "caption.concurrency=2",
                "caption.parts_per_call=1", "caption.requests_per_minute=0"]
        p = subprocess.Popen([str(BIN / "python"), "-m", "jobs.build_dataset", *args], env=env(), cwd=REPO,
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: len(srv.requests) >= 6, 240), "captioning never started"
        os.killpg(p.pid, signal.SIGKILL)  # the driver and the local Ray it started
        p.wait(30)
        committed = set()
        for seg in (out / "_cache" / "captions").glob("seg-*.jsonl"):
            committed |= {json.loads(l)["sample_id"] for l in seg.read_text().splitlines() if l.strip()}
        assert committed, "nothing was committed before the kill"
        done = _job(args, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    import pyarrow.dataset as pads

    rows = pads.dataset(str(out / "triplets"), format="parquet").to_table(
        columns=["sample_id", "caption", "ir_caption_status"]).to_pylist()
    ids = [r["sample_id"] for r in rows]
    assert len(ids) == len(set(ids))
    selected = [r for r in rows if r["ir_caption_status"] != "not_selected"]
    by_caption: dict[str, list[str]] = {}
    for r in selected:
        by_caption.setdefault(r["caption"], []).append(r["sample_id"])
    checked = 0
    for r in selected:
        if r["sample_id"] in committed and len(by_caption[r["caption"]]) == 1:
            assert len(srv.requests_for(r["caption"])) == 1, r  # asked once, before the kill; never again
            checked += 1
    assert checked >= 3 and all(r["ir_caption_status"] == "accepted" for r in selected)


def test_job_submit_stop_resubmit(sample_sources, tmp_path):
    e = env()
    temp_dir, port, dash = start_head(2, ["--include-dashboard=true"], e)
    ray = str(BIN / "ray")
    address = f"http://127.0.0.1:{dash}"
    out = tmp_path / "out"
    cmd = ["--", "python", "-m", "jobs.build_dataset", *sample_build_args(sample_sources), f"output={out}"]
    renv = json.dumps({"working_dir": str(REPO), "excludes": [".venv", "out", ".git", "**/__pycache__"]})

    def job(*a, **kw):
        return subprocess.run([ray, "job", *a], env=e, capture_output=True, text=True, timeout=180, **kw)

    def status(sid):
        r = job("status", "--address", address, sid)
        return (r.stdout + r.stderr).lower()

    def submit(*a):
        for _ in range(30):  # a fresh head's job agent takes a while to come up
            r = job("submit", "--address", address, *a)
            if "No available agent" not in r.stderr:
                return r
            time.sleep(2)
        return r

    try:
        r = submit("--submission-id", "build-1", "--no-wait", "--runtime-env-json", renv, *cmd)
        assert r.returncode == 0, r.stderr[-2000:]
        assert wait_for(lambda: (out / "_stage" / "ingest").exists() and any((out / "_stage" / "ingest").rglob("*.parquet")), 240,
                        every=0.5), status("build-1") + job("logs", "--address", address, "build-1").stdout[-3000:]
        t0 = time.time()
        job("stop", "--address", address, "build-1")
        assert wait_for(lambda: "stopped" in status("build-1"), 60, every=0.5), status("build-1") + job("logs", "--address", address, "build-1").stdout[-3000:]
        ledgers = list((out / "ledger").glob("*.json"))
        assert ledgers and json.loads(ledgers[0].read_text())["status"] == "interrupted"  # flushed on SIGTERM
        assert time.time() - t0 < 30
        r = submit("--submission-id", "build-2", "--runtime-env-json", renv, *cmd)
        assert r.returncode == 0 and "succeeded" in status("build-2"), r.stdout[-3000:] + r.stderr[-3000:]
        ids = output_ids(out)
        assert len(ids) == len(set(ids)) and set(ids) == expected_ids(sample_sources)
        logs = job("logs", "--address", address, "build-2").stdout + job("logs", "--address", address, "build-1").stdout
        assert os.environ["AWS_SECRET_ACCESS_KEY"] not in logs and API_KEY not in logs
    finally:
        kill_head(temp_dir, port)
