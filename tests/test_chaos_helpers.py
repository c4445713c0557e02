"""The chaos tests' head helpers end only their own head: which command lines count as that
head's (argument boundaries, not substrings), and kill_head on real processes (no Ray) that
also removes the head's temp dir."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tests.chaos.common import is_head_process, kill_head

TEMP = "/tmp/frsab12cd"
PORT = 4123


@pytest.mark.parametrize("cmdline", [
    ["/venv/bin/python", "-u", "default_worker.py", "--temp-dir=/tmp/frsab12cd"],
    ["raylet", "--session_dir=/tmp/frsab12cd/session_2026-01-01_00-00-00_1", "--node_manager_port=0"],
    ["raylet", "--raylet_socket_name=/tmp/frsab12cd/session_x/sockets/raylet"],
    ["gcs_server", "--log_dir", "/tmp/frsab12cd/session_x/logs"],
    ["/tmp/frsab12cd"],
    ["/tmp/frsab12cd/"],
    ["python", "agent.py", "--addresses=10.0.0.1,/tmp/frsab12cd/session_x"],
    ["python", "-m", "ray.util.client.server", "--port=4123"],
    ["python", "dashboard.py", "--gcs-address=127.0.0.1:4123"],
    ["python", "worker.py", "127.0.0.1:4123"],
    ["ray::IDLE --gcs-address=127.0.0.1:4123 --other"],  # a rewritten title: one element with spaces
    ["python", "log_monitor.py", "--logs-dir='/tmp/frsab12cd/session_x/logs'"],
])
def test_a_head_process_is_recognised_by_its_temp_dir_or_port(cmdline):
    assert is_head_process(cmdline, TEMP, PORT)


@pytest.mark.parametrize("cmdline", [
    ["raylet", "--session_dir=/tmp/frsab12cde/session_x"],  # another head: the same prefix, longer name
    ["python", "x.py", "--temp-dir=/tmp/frsab12cd2"],
    ["python", "x.py", "/var/tmp/frsab12cd/session"],  # not the same path: another parent
    ["python", "x.py", "/data/tmp/frsab12cdx"],
    ["python", "dashboard.py", "--gcs-address=127.0.0.1:41234"],  # `:4123` is not `:41234`
    ["python", "dashboard.py", "--gcs-address=127.0.0.1:14123"],  # ... nor a port ending in it
    ["python", "-m", "ray.util.client.server", "--port=41234"],
    ["python", "-m", "ray.util.client.server", "--port=14123"],
    ["python", "x.py", "--node-manager-port=4123"],  # only --port=<port> itself
    ["python", "x.py", "http://127.0.0.1:41234/api"],
    ["python", "x.py", "ratio:41230"],
    ["ray::IDLE"],  # a renamed worker shows nothing; kill_head takes it as a child of its raylet
    [],
])
def test_other_processes_are_not_the_heads(cmdline):
    assert not is_head_process(cmdline, TEMP, PORT)


def test_without_a_port_only_the_temp_dir_counts():
    assert not is_head_process(["python", "x.py", "--port=4123"], TEMP, None)
    assert not is_head_process(["python", "x.py", "127.0.0.1:4123"], TEMP, None)
    assert is_head_process(["python", "x.py", "--temp-dir=/tmp/frsab12cd"], TEMP, None)


def _sleeper(*args: str) -> subprocess.Popen:
    """A harmless process whose command line carries `args` (Python ignores them)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *args])


def test_kill_head_ends_only_that_heads_processes_and_removes_its_temp_dir():
    temp_dir = tempfile.mkdtemp(prefix="frs", dir="/tmp")
    neighbour = temp_dir + "x"  # another head's temp dir, the same prefix
    (open(os.path.join(temp_dir, "marker"), "w")).close()
    with socket.socket() as s:  # a port held for the test: nothing else on the machine can be using it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        mine = [_sleeper(f"--temp-dir={temp_dir}"), _sleeper(f"--session_dir={temp_dir}/session_1"),
                _sleeper(f"--gcs-address=127.0.0.1:{port}"), _sleeper(f"--port={port}")]
        others = [_sleeper(f"--temp-dir={neighbour}"), _sleeper(f"--gcs-address=127.0.0.1:{port}9"),
                  _sleeper(f"--port={port}0")]
        try:
            time.sleep(0.3)  # let the command lines show up
            kill_head(temp_dir, port)
            for p in mine:
                assert p.wait(timeout=10) is not None
            time.sleep(0.2)
            assert all(p.poll() is None for p in others)  # untouched
            assert not os.path.exists(temp_dir)
        finally:
            for p in mine + others:
                if p.poll() is None:
                    p.kill()
                p.wait(timeout=10)


def test_kill_head_leaves_a_directory_it_did_not_make():
    """The temp dir is removed only when it is start_head's kind (/tmp/frs*)."""
    d = tempfile.mkdtemp(prefix="not-a-head-")
    try:
        kill_head(d, None)
        assert os.path.isdir(d)
    finally:
        os.rmdir(d)
