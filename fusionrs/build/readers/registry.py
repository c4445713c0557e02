"""Dispatch from `format` to the reader module."""

from __future__ import annotations

from typing import Iterator

from fusionrs.build.readers import karpathy_json, nwpu, rs5m_wds, skyscript_csv
from fusionrs.build.readers.base import (
    DUPLICATE_RECORD,
    READ_ERROR_IO,
    READ_ERROR_MISSING,
    SourceRecord,
    WorkUnit,
    make_sample_id,
)
from fusionrs.core.storage import Storage, join

_PLANNERS = {
    "karpathy_json": karpathy_json.plan,
    "nwpu": nwpu.plan,
    "skyscript_csv": skyscript_csv.plan,
    "rs5m_wds": rs5m_wds.plan,
}


def plan_units(src, storage: Storage, records_per_unit: int) -> list[WorkUnit]:
    return _PLANNERS[src.format](src, storage, records_per_unit)


def read_unit(unit: WorkUnit, storage: Storage) -> Iterator[SourceRecord]:
    if unit.format == "rs5m_wds":
        yield from rs5m_wds.read(unit, storage)
        return
    # File-per-image formats: the entries say where each image is.
    for e in unit.entries:
        rec = SourceRecord(
            sample_id=make_sample_id(unit.source, e["record_id"]), source=unit.source,
            source_format=unit.format, source_record_id=e["record_id"], source_locator=e["locator"],
            class_name=e.get("class_name"), captions=list(e.get("captions", [])), image=None)
        if e.get("duplicate"):
            rec.read_error = DUPLICATE_RECORD
        else:
            try:
                rec.image = storage.read_bytes(join(unit.root, e["locator"]))
            except FileNotFoundError:
                rec.read_error = READ_ERROR_MISSING
            except OSError as ex:
                # pyarrow's S3 errors are OSErrors; say which kind without echoing config.
                rec.read_error = READ_ERROR_MISSING if "not found" in str(ex).lower() or "NoSuchKey" in str(ex) else READ_ERROR_IO
        yield rec
