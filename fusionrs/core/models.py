"""Model files and folders by URI: local paths are used in place; s3:// (or any pyarrow
filesystem) files and folders are copied once per node into a local cache, streamed to disk in
chunks (multi-GB weight shards never sit whole in memory), then loaded like any local
checkpoint. A lock serialises the actors of one node; a marker file written last means complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

from fusionrs.core.storage import Storage, join

CACHE = Path(os.environ.get("FUSIONRS_MODEL_CACHE", Path.home() / ".cache" / "fusionrs" / "models"))
CHUNK = 8 << 20


def cache_root() -> Path:
    """Read at call time, so FUSIONRS_MODEL_CACHE set by a process (or a test) takes effect."""
    return Path(os.environ.get("FUSIONRS_MODEL_CACHE", CACHE))


def ensure_local(uri: str, storage: Storage | None = None) -> Path:
    """A local folder with the contents of the model folder `uri`."""
    if "://" not in uri:
        return Path(uri)
    storage = storage or Storage.from_env()
    dest = cache_root() / hashlib.sha256(uri.encode()).hexdigest()[:16]
    done = dest / ".fusionrs-complete"
    if done.exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f"{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other actors on this node wait, then reuse the copy
        if not done.exists():
            for f in storage.list_files(uri, "*", recursive=True):
                copy_to_local(storage, f, dest / f[len(uri.rstrip("/")) + 1:])
            done.write_text(uri)
    return dest


def stage_file(uri: str, storage: Storage | None = None) -> str:
    """A local path for the single file `uri` (unchanged when it is local or not a URI)."""
    if not uri or "://" not in uri:
        return uri
    storage = storage or Storage.from_env()
    dest = cache_root() / "files" / hashlib.sha256(uri.encode()).hexdigest()[:16] / uri.rsplit("/", 1)[-1]
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not dest.exists():
                copy_to_local(storage, uri, dest)
    return str(dest)


def copy_to_local(storage: Storage, uri: str, target: Path) -> None:
    """Stream one file to `target` (atomic rename), CHUNK bytes at a time."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    with storage.open_input_stream(uri) as src, open(tmp, "wb") as out:
        while True:
            block = src.read(CHUNK)
            if not block:
                break
            out.write(block)
    os.replace(tmp, target)


def read_model_json(uri: str, storage: Storage, name: str) -> dict:
    return json.loads(storage.read_bytes(join(uri, name)))
