"""SkyScript CSV: `filepath,title,title_multi_objects` plus the image files under root."""

from __future__ import annotations

import pyarrow.csv as pacsv

from fusionrs.build.readers.base import WorkUnit, chunk_entries, safe_locator
from fusionrs.core.storage import Storage, join

COLUMNS = ("filepath", "title", "title_multi_objects")


def plan(src, storage: Storage, size: int) -> list[WorkUnit]:
    with storage.open_input(join(src.root, src.annotations)) as f:
        table = pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(
            column_types={c: "string" for c in COLUMNS}, strings_can_be_null=True))
    missing = [c for c in ("filepath", "title") if c not in table.column_names]
    if missing:
        raise ValueError(f"{src.name}: {src.annotations} lacks columns {missing}")
    entries = []
    multi = table.column("title_multi_objects").to_pylist() if "title_multi_objects" in table.column_names else [None] * len(table)
    for path, title, title_multi in zip(table.column("filepath").to_pylist(), table.column("title").to_pylist(), multi):
        if not path:
            continue
        locator = safe_locator(path)
        entries.append({"record_id": locator, "locator": locator, "class_name": None,
                        "captions": [c for c in (title, title_multi) if c is not None]})
    return chunk_entries(src.name, src.format, src.root, entries, size)
