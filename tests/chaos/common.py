"""Helpers shared by the chaos scripts (each runs in its own process with its own Ray)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.dataset as pads


def output_ids(out: Path) -> list[str]:
    files = sorted(str(f) for d in ("triplets", "rejects") for f in (out / d).glob("*.parquet"))
    return pads.dataset(files, format="parquet").to_table(columns=["sample_id"]).column(0).to_pylist() if files else []


def expected_ids(sample_dir: Path) -> set[str]:
    """Every record the sample generator wrote (its own manifest, not the build's readers)."""
    from fusionrs.dev.sample import read_manifest

    return {r["sample_id"] for r in read_manifest(sample_dir)["records"]}


def wait_for(pred, timeout: float, every: float = 0.2) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(every)
    return False


def report(**kw) -> None:
    print("RESULT " + json.dumps(kw), flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(num_cpus: int, extra: list[str] = (), env_extra: dict | None = None) -> tuple[str, int, str]:
    """`ray start --head` with its own temp dir and free ports (never `ray stop`: that would end
    every Ray on the machine). Returns (temp_dir, gcs_port, dashboard_port as str)."""
    import os
    import shutil
    import subprocess
    import tempfile

    temp_dir = tempfile.mkdtemp(prefix="frs", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    port, dash = free_port(), free_port()
    ports = [f"--{k}={free_port()}" for k in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                               "metrics-export-port", "runtime-env-agent-port", "ray-client-server-port",
                                               "node-manager-port", "object-manager-port")]
    env = {**os.environ, **(env_extra or {})}
    subprocess.run([shutil.which("ray", path=env.get("PATH")) or "ray", "start", "--head", f"--port={port}",
                    f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", f"--num-cpus={num_cpus}",
                    "--disable-usage-stats", f"--temp-dir={temp_dir}", *ports, *extra],
                   env=env, check=True, capture_output=True, timeout=120)
    return temp_dir, port, str(dash)


def kill_head(temp_dir: str, port: int | None = None) -> None:
    """Every process of that head (its temp dir or GCS port on the command line) and their children."""
    import psutil

    marks = [temp_dir] + ([f":{port}"] if port else [])
    victims = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if any(m in cmd for m in marks):
            try:  # agents and workers rename themselves "ray::...": take the whole tree
                victims += [proc, *proc.children(recursive=True)]
            except psutil.Error:
                pass
    for proc in victims:
        try:
            proc.kill()
        except psutil.Error:
            pass
