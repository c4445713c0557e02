"""Shared fixtures: a local Ray instance, a moto S3 server, generated sample sources.

Real components only: Ray is started here, S3 is moto's server speaking the real protocol,
sample data is written in the real on-disk formats.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Dummy credentials before Ray starts, so its workers inherit them (moto accepts any keys).
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "sentinel-secret-key-DO-NOT-LEAK-6b1f")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["HF_HUB_OFFLINE"] = "1"
# The caption API key tests use: a sentinel that must never appear in logs or outputs.
API_KEY_ENV = "FUSIONRS_TEST_API_KEY"
API_KEY = "sk-sentinel-API-KEY-must-not-leak-93c2"
os.environ[API_KEY_ENV] = API_KEY
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FUSIONRS_SHARED_DATA", REPO.parent / "shared" / "data"))
DEMO_RECIPE = REPO / "configs" / "demo.yaml"


def sample_build_args(sample_dir: Path, *overrides: str) -> list[str]:
    """The demo recipe pointed at generated sources: argv of `jobs.build_dataset` / `fusionrs build`."""
    from fusionrs.dev.sample import source_overrides

    return ["--config", str(DEMO_RECIPE), *source_overrides(DEMO_RECIPE, sample_dir), *overrides]


def sample_config(sample_dir: Path, *overrides: str):
    """The demo recipe over generated sources, as a BuildConfig."""
    from fusionrs.config import load_config
    from fusionrs.dev.sample import source_overrides

    return load_config(DEMO_RECIPE, [*source_overrides(DEMO_RECIPE, sample_dir), *overrides])


def pytest_collection_modifyitems(config, items):
    """`isolated` tests end every Ray process on the machine (Ray's AutoscalingCluster runs
    `ray stop --force`): they run only where the machine belongs to the suite (CI sets CI=true)
    or when asked (FUSIONRS_ISOLATED_TESTS=1), and say so when skipped."""
    if os.environ.get("CI", "").lower() == "true" or os.environ.get("FUSIONRS_ISOLATED_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="isolated: runs `ray stop --force`, which would end every Ray job on this machine; "
                                   "runs in CI (CI=true) or with FUSIONRS_ISOLATED_TESTS=1")
    for item in items:
        if "isolated" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (set FUSIONRS_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_local():
    import ray

    if not ray.is_initialized():
        # One fake GPU resource: GPU scheduling and GPU budgets are exercised on CPU.
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free local port, as Ray's own tests use it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def sample_sources(tmp_path_factory) -> Path:
    from fusionrs.dev.sample import write_sample

    out = tmp_path_factory.mktemp("sample") / "src"
    write_sample(out, per_source=24, seed=0)
    return out


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`fusionrs demo` as a user runs it, once per session: a subprocess with its own local Ray,
    output not a terminal. Returns (its --out folder, the CompletedProcess). Its outputs are the
    demo's data for the training and evaluation tests (demo_build) and the demo's own checks
    (test_demo.py): the suite pays for the demo once."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("demo") / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}  # its own local Ray, as on a fresh machine
    env.pop("FUSIONRS_VERBOSE", None)
    r = subprocess.run([sys.executable, "-m", "fusionrs.cli", "demo", "--out", str(out)], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=1800)
    return out, r


@pytest.fixture(scope="session")
def demo_build(demo_run, ray_local):
    """The demo's own data (shared by the CLIP and VLM tests, read only): `fusionrs sample` at the
    demo size built with the demo recipe, by `fusionrs demo` (demo_run)."""
    out, r = demo_run
    assert r.returncode == 0, "fusionrs demo failed:\n" + (r.stdout + r.stderr)[-4000:]
    return out / "build"
