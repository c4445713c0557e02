"""RS5M webdataset tars: members `<key>.img_content` (image bytes), `<key>.img_name`,
`<key>.caption`. One unit per tar; the tar is streamed, never staged whole on local disk."""

from __future__ import annotations

import posixpath
import tarfile
from typing import Iterator

from fusionrs.build.readers.base import DUPLICATE_RECORD, READ_ERROR_MISSING, SourceRecord, WorkUnit, make_sample_id
from fusionrs.core.storage import Storage


def plan(src, storage: Storage, size: int) -> list[WorkUnit]:
    tars = storage.list_files(src.root, src.shards, recursive=True)
    if not tars:
        raise ValueError(f"{src.name}: no tar files match {src.shards!r} under the source root")
    units = []
    for t in tars:
        stem = posixpath.basename(t).rsplit(".", 1)[0]
        units.append(WorkUnit(unit_id=f"{src.name}-{stem}", source=src.name, format=src.format, root=src.root, path=t))
    return units


def _split_member(name: str) -> tuple[str, str]:
    # webdataset convention: key = path up to the first dot of the basename.
    d, b = posixpath.split(name)
    stem, _, ext = b.partition(".")
    return posixpath.join(d, stem) if d else stem, ext


def read(unit: WorkUnit, storage: Storage) -> Iterator[SourceRecord]:
    tar_name = posixpath.basename(unit.path)
    seen: set[str] = set()

    def make(key: str, fields: dict[str, bytes]) -> SourceRecord:
        record_id = f"{tar_name}/{key}"
        caption = fields.get("caption", b"").decode("utf-8", "replace")
        rec = SourceRecord(
            sample_id=make_sample_id(unit.source, record_id), source=unit.source, source_format=unit.format,
            source_record_id=record_id, source_locator=record_id,
            class_name=None, captions=[caption], image=fields.get("img_content"))
        if record_id in seen:
            rec.read_error, rec.image = DUPLICATE_RECORD, None
        elif rec.image is None:
            rec.read_error = READ_ERROR_MISSING
        seen.add(record_id)
        return rec

    with storage.open_input(unit.path) as f:
        key, fields = None, {}
        with tarfile.open(fileobj=f, mode="r|*") as tar:  # stream mode: sequential reads only
            for m in tar:
                if not m.isfile():
                    continue
                k, ext = _split_member(m.name)
                if k != key and key is not None:
                    yield make(key, fields)
                    fields = {}
                key = k
                fields[ext] = tar.extractfile(m).read()
        if key is not None:
            yield make(key, fields)
