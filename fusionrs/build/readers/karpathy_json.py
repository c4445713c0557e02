"""Karpathy-style caption JSON (RSICD `dataset_rsicd.json`, RSITMD `dataset_RSITMD.json`, UCM,
Sydney): `{"images": [{"filename", "filepath"?, "split", "sentences": [{"raw"}]}]}`."""

from __future__ import annotations

import json

from fusionrs.build.readers.base import WorkUnit, chunk_entries, safe_locator
from fusionrs.core.storage import Storage, join


def plan(src, storage: Storage, size: int) -> list[WorkUnit]:
    doc = json.loads(storage.read_bytes(join(src.root, src.annotations)))
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list):
        raise ValueError(f"{src.name}: {src.annotations} has no 'images' list (Karpathy format)")
    entries = []
    for img in images:
        name = img.get("filename")
        if not name:
            continue
        locator = safe_locator("/".join(p for p in (img.get("filepath", ""), name) if p))
        entries.append({
            "record_id": locator,
            "locator": locator,
            "class_name": None,
            "captions": [s.get("raw", "") for s in img.get("sentences", []) if isinstance(s, dict)],
        })
    return chunk_entries(src.name, src.format, src.root, entries, size)
