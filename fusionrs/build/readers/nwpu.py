"""NWPU-RESISC45 class folders `NWPU_images/<class>/<file>` plus the NWPU-Captions JSON:
`{class: [{"filename", "imgid", "split", "raw", "raw_1".."raw_4", "sentids"}]}`."""

from __future__ import annotations

import json

from fusionrs.build.readers.base import WorkUnit, chunk_entries, safe_locator
from fusionrs.core.storage import Storage, join

RAW_KEYS = ("raw", "raw_1", "raw_2", "raw_3", "raw_4")


def plan(src, storage: Storage, size: int) -> list[WorkUnit]:
    doc = json.loads(storage.read_bytes(join(src.root, src.annotations)))
    if not isinstance(doc, dict):
        raise ValueError(f"{src.name}: {src.annotations} is not a class → records mapping (NWPU-Captions)")
    entries = []
    for class_name in sorted(doc):
        for rec in doc[class_name]:
            name = rec.get("filename")
            if not name:
                continue
            locator = safe_locator("/".join(p for p in (src.images_dir, class_name, name) if p))
            entries.append({
                "record_id": f"{class_name}/{name}",
                "locator": locator,
                "class_name": class_name,
                "captions": [rec[k] for k in RAW_KEYS if isinstance(rec.get(k), str)],
            })
    return chunk_entries(src.name, src.format, src.root, entries, size)
