"""Model folders by URI: local paths are used in place; s3:// folders are copied once per
node into a local cache (a lock serialises the actors of one node; a marker file written last
means complete), then loaded from disk like any local checkpoint."""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from .storage import Storage, join

CACHE = Path(os.environ.get("FUSIONRS_MODEL_CACHE", Path.home() / ".cache" / "fusionrs" / "models"))


def ensure_local(uri: str, storage: Storage) -> Path:
    if "://" not in uri:
        return Path(uri)
    dest = CACHE / hashlib.sha256(uri.encode()).hexdigest()[:16]
    done = dest / ".fusionrs-complete"
    if done.exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f"{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other actors on this node wait, then reuse the copy
        if not done.exists():
            for f in storage.list_files(uri, "*", recursive=True):
                rel = f[len(uri.rstrip("/")) + 1:]
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(storage.read_bytes(f))
            done.write_text(uri)
    return dest


def read_model_json(uri: str, storage: Storage, name: str) -> dict:
    import json

    return json.loads(storage.read_bytes(join(uri, name)))
