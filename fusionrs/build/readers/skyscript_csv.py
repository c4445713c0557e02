"""SkyScript CSV: `filepath,title,title_multi_objects` plus the image files under root."""

from __future__ import annotations

import csv
import io

from fusionrs.build.readers.base import (
    RecordRejected,
    SourceError,
    WorkUnit,
    chunk_entries,
    clean_locator,
    entry,
    read_annotations,
    rejected_entry,
)
from fusionrs.config.build import full_uri
from fusionrs.core.storage import Storage

COLUMNS = ("filepath", "title", "title_multi_objects")


def plan(src, storage: Storage, size: int) -> list[WorkUnit]:
    text = read_annotations(storage, full_uri(src.root, src.annotations), src.name)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in ("filepath", "title") if c not in (reader.fieldnames or [])]
    if missing:
        raise SourceError(f"source {src.name}: {src.annotations} lacks columns {missing}")
    entries = []
    try:
        for i, row in enumerate(reader):
            entries.append(_entry(i, row))
    except csv.Error as e:
        raise SourceError(f"source {src.name}: {src.annotations} line {reader.line_num}: {e}") from None
    return chunk_entries(src.name, src.format, src.root, entries, size)


def _entry(i: int, row: dict) -> dict:
    path = row.get("filepath")
    try:
        locator = clean_locator(path)
        captions = [c for c in (row.get("title"), row.get("title_multi_objects")) if c]
        if None in row:  # more fields than the header: the row is malformed
            raise RecordRejected("bad_record", f"{len(row[None])} field(s) beyond the header")
    except RecordRejected as e:
        return rejected_entry(i, e.reason, f"row {i + 1}: {e.detail}", path)
    return entry(locator, locator, captions)
