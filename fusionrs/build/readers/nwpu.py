"""NWPU-RESISC45 class folders `NWPU_images/<class>/<file>` plus the NWPU-Captions JSON:
`{class: [{"filename", "imgid", "split", "raw", "raw_1".."raw_4", "sentids"}]}`."""

from __future__ import annotations

from fusionrs.build.readers.base import (
    RecordRejected,
    SourceError,
    WorkUnit,
    chunk_entries,
    clean_locator,
    entry,
    read_json_annotations,
    rejected_entry,
    text_field,
)
from fusionrs.config.build import full_uri
from fusionrs.core.storage import Storage

RAW_KEYS = ("raw", "raw_1", "raw_2", "raw_3", "raw_4")


def plan(src, storage: Storage, size: int) -> list[WorkUnit]:
    doc = read_json_annotations(storage, full_uri(src.root, src.annotations), src.name)
    if not isinstance(doc, dict):
        raise SourceError(f"source {src.name}: {src.annotations} is not a class → records mapping (NWPU-Captions)")
    entries, index = [], 0
    for class_name in sorted(doc):
        records = doc[class_name]
        if not isinstance(records, list):
            entries.append(rejected_entry(index, "bad_record", f"class {class_name!r} holds a "
                                          f"{type(records).__name__}, not a list of records"))
            index += 1
            continue
        for rec in records:
            entries.append(_entry(index, class_name, rec, src.images_dir))
            index += 1
    return chunk_entries(src.name, src.format, src.root, entries, size)


def _entry(i: int, class_name: str, rec, images_dir: str) -> dict:
    if not isinstance(rec, dict):
        return rejected_entry(i, "bad_record", f"a {class_name} record is a {type(rec).__name__}, not an object")
    name = rec.get("filename")
    try:
        cls = clean_locator(class_name)  # the class is a folder name too
        fname = clean_locator(name)
        locator = clean_locator("/".join(p for p in (images_dir, cls, fname) if p))
        captions = [text_field(rec[k], k) for k in RAW_KEYS if k in rec and rec[k] is not None]
    except RecordRejected as e:
        return rejected_entry(i, e.reason, f"{class_name}: {e.detail}", name)
    return entry(f"{cls}/{fname}", locator, captions, cls)
