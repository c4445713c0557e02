"""Dispatch from `format` to the reader module; reading file-per-image records safely."""

from __future__ import annotations

from typing import Iterator

import fusionrs.build.readers.rs5m_wds as rs5m_wds
from fusionrs.build.readers.base import SourceError, SourceRecord, WorkUnit, make_sample_id
from fusionrs.build.readers.karpathy_json import plan as karpathy_plan
from fusionrs.build.readers.nwpu import plan as nwpu_plan
from fusionrs.build.readers.skyscript_csv import plan as skyscript_plan
from fusionrs.core.storage import ReadRefused, Storage
from fusionrs.dataset.schema import MISSING_FILE, READ_ERROR

_PLANNERS = {
    "karpathy_json": karpathy_plan,
    "nwpu": nwpu_plan,
    "skyscript_csv": skyscript_plan,
    "rs5m_wds": rs5m_wds.plan,
}


def plan_units(src, storage: Storage, records_per_unit: int) -> list[WorkUnit]:
    """The source's work units; a SourceError naming the source for a missing root or unreadable
    annotations (before anything is written)."""
    if not storage.exists(src.root):
        raise SourceError(f"source {src.name}: root {src.root} does not exist")
    return _PLANNERS[src.format](src, storage, records_per_unit)


def read_unit(unit: WorkUnit, storage: Storage, max_file_bytes: int = 1 << 62,
              timeout_s: float = 0.0) -> Iterator[SourceRecord]:
    """Every record of a unit, image bytes included; a record that cannot be read carries
    `read_error` (a reason code) and no image: it becomes a reject row, never a crash."""
    if unit.format == "rs5m_wds":
        yield from rs5m_wds.read(unit, storage, max_file_bytes)
        return
    root = unit.root.rstrip("/")
    for e in unit.entries:
        rec = SourceRecord(
            sample_id=make_sample_id(unit.source, e["record_id"]), source=unit.source,
            source_format=unit.format, source_record_id=e["record_id"], source_locator=e["locator"],
            class_name=e.get("class_name"), captions=list(e.get("captions", [])), image=None)
        if e.get("reject"):
            rec.read_error, rec.read_detail = e["reject"], e.get("detail", "")
        else:
            try:
                # Plain concatenation: the locator is clean (base.clean_locator), so it stays under root.
                rec.image = storage.read_bounded(f"{root}/{e['locator']}", max_file_bytes, within=unit.root,
                                                 timeout_s=timeout_s)
            except ReadRefused as ex:
                rec.read_error, rec.read_detail = ex.reason, ex.detail
            except FileNotFoundError:
                rec.read_error = MISSING_FILE
            except OSError as ex:
                # pyarrow's S3 errors are OSErrors; name the kind without echoing config.
                missing = "not found" in str(ex).lower() or "NoSuchKey" in str(ex)
                rec.read_error = MISSING_FILE if missing else READ_ERROR
                rec.read_detail = "" if missing else type(ex).__name__
        yield rec


__all__ = ["plan_units", "read_unit", "SourceError"]
