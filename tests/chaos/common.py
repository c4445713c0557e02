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
    every Ray on the machine). Returns (temp_dir, gcs_port, dashboard_port as str). End it with
    `kill_head(temp_dir, gcs_port)`, which also removes the temp dir; a head that fails to start
    is cleaned up here before the error propagates."""
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
    try:
        subprocess.run([shutil.which("ray", path=env.get("PATH")) or "ray", "start", "--head", f"--port={port}",
                        f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", f"--num-cpus={num_cpus}",
                        "--disable-usage-stats", f"--temp-dir={temp_dir}", *ports, *extra],
                       env=env, check=True, capture_output=True, timeout=120)
    except BaseException:
        kill_head(temp_dir, port)  # whatever half-started, and the temp dir
        raise
    return temp_dir, port, str(dash)


# Characters that may sit right before a path inside one argument (`--temp-dir=/tmp/x`,
# `--addresses=a,/tmp/x`, `"/tmp/x"`) and right after the port in `host:port` forms.
_PATH_BEFORE = "=:,;'\""
_PORT_AFTER = ",;/'\""


def is_head_process(cmdline: list[str] | tuple[str, ...], temp_dir: str, port: int | None = None) -> bool:
    """Whether a command line belongs to the head started with this temp dir and GCS port.

    - the temp dir must appear as a whole path prefix: `/tmp/frsab` matches `/tmp/frsab`,
      `--temp-dir=/tmp/frsab` and `/tmp/frsab/session_x/sockets/raylet`, never `/tmp/frsabc`;
    - the port must be a whole argument `--port=<port>` or end a `host:<port>` argument
      (`--gcs-address=127.0.0.1:4123`): `:4123` never matches `:41234` or `:4123` inside
      something longer.
    Arguments are also split on whitespace (a process that rewrote its title may show its whole
    command line as one element)."""
    root = temp_dir.rstrip("/") or "/"
    tokens = [t for a in cmdline for t in str(a).split()]
    for tok in tokens:
        start = tok.find(root)
        while start != -1:
            end = start + len(root)
            before_ok = start == 0 or tok[start - 1] in _PATH_BEFORE
            after_ok = end == len(tok) or tok[end] in "/" + _PORT_AFTER
            if before_ok and after_ok:
                return True
            start = tok.find(root, start + 1)
        if port is not None:
            if tok == f"--port={port}":
                return True
            p = f":{port}"
            start = tok.find(p)
            while start != -1:
                end = start + len(p)
                if end == len(tok) or tok[end] in _PORT_AFTER:
                    return True
                start = tok.find(p, start + 1)
    return False


def kill_head(temp_dir: str, port: int | None = None, timeout: float = 10.0) -> None:
    """Every process of that head (is_head_process) and their children, then its temp dir.
    Never this process or its ancestors, and nothing of another head."""
    import os
    import shutil

    import psutil

    me = psutil.Process(os.getpid())
    spared = {me.pid, *(p.pid for p in me.parents())}
    victims: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid in spared or not is_head_process(proc.info["cmdline"] or [], temp_dir, port):
            continue
        try:  # agents and workers rename themselves "ray::...": take the whole tree
            for p in (proc, *proc.children(recursive=True)):
                if p.pid not in spared:
                    victims[p.pid] = p
        except psutil.Error:
            pass
    for proc in victims.values():
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(victims.values()), timeout=timeout)
    # Only a temp dir start_head made (frs* under /tmp), never some other path passed in by mistake.
    if os.path.basename(temp_dir.rstrip("/")).startswith("frs") and os.path.dirname(temp_dir.rstrip("/")) == "/tmp":
        shutil.rmtree(temp_dir, ignore_errors=True)
