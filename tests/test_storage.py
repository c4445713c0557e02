"""Storage and model staging: a weight file is streamed to disk in chunks (a multi-GB shard never
sits in memory), a model folder is copied once, and any pyarrow.fs scheme is accepted, an
unknown one failing with pyarrow's own message."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from fusionrs.core.storage import Storage

MB = 1 << 20


def s3_env(endpoint: str) -> dict:
    return {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def big_model(s3_server, tmp_path_factory):
    """s3://models/big/: a 200 MB weight file and a config, uploaded in parts."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    s3.create_bucket(Bucket="models")
    local = tmp_path_factory.mktemp("big") / "weights.bin"
    with open(local, "wb") as f:
        block = os.urandom(MB)
        for i in range(200):
            f.write(block[:-4] + i.to_bytes(4, "little"))
    s3.upload_file(str(local), "models", "big/weights.bin")
    s3.put_object(Bucket="models", Key="big/config.json", Body=b'{"tiny": true}')
    s3.put_object(Bucket="models", Key="small/x.txt", Body=b"warm-up")
    return local


CHILD = textwrap.dedent("""
    import json, sys
    from fusionrs.core.models import ensure_local, stage_file

    def status(key):  # kB, from the kernel: VmRSS now, VmHWM the peak so far
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    stage_file("s3://models/small/x.txt")  # the S3 client and its buffers, before measuring
    before = status("VmRSS")
    path = stage_file("s3://models/big/weights.bin")
    folder = ensure_local("s3://models/big")
    print(json.dumps({"growth": status("VmHWM") - before, "path": path, "folder": str(folder)}))
""")


def test_staging_streams_to_disk(big_model, s3_server, tmp_path):
    import filecmp
    import json

    env = {**s3_env(s3_server), "FUSIONRS_MODEL_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert filecmp.cmp(out["path"], big_model, shallow=False)
    assert filecmp.cmp(os.path.join(out["folder"], "weights.bin"), big_model, shallow=False)
    assert open(os.path.join(out["folder"], "config.json")).read() == '{"tiny": true}'
    # Two 200 MB copies went through this process; its peak grew by less than 64 MB.
    assert out["growth"] < 64 * MB, f"staging grew RSS by {out['growth'] / MB:.0f} MB"
    assert not list((tmp_path / "cache").rglob("*.partial"))  # renamed into place, nothing half-written


def test_any_pyarrow_scheme_is_accepted_and_unknown_ones_fail_with_pyarrow_s_message():
    fs, path = Storage().resolve("gs://bucket/fusionrs/600k/manifest.json")
    assert type(fs).__name__ == "GcsFileSystem" and path == "bucket/fusionrs/600k/manifest.json"
    fs, path = Storage().resolve("abfs://container@account.dfs.core.windows.net/out/x.parquet")
    assert type(fs).__name__ == "AzureFileSystem"
    assert not Storage().is_local("gs://bucket/x") and Storage().is_local("file:///tmp/x")
    with pytest.raises(pa.ArrowInvalid, match="Unrecognized filesystem type in URI: foo://bucket/x"):
        Storage().resolve("foo://bucket/x")
