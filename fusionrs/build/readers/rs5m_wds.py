"""RS5M webdataset tars: members `<key>.img_content` (image bytes), `<key>.img_name`,
`<key>.caption`. One unit per tar; the tar is streamed, never staged whole on local disk.

Record ids are `<tar path relative to the root>/<key>`: two tars with the same name in different
folders are different records. A member whose name is absolute or climbs with `..`, a link or
device member, an oversized member, a repeated key (two records, the second a duplicate) and the
rest of a tar that breaks off are reject rows; the records before the break are kept.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import tarfile
from typing import Iterator

from fusionrs.build.readers.base import (
    RecordRejected,
    SourceError,
    SourceRecord,
    WorkUnit,
    clean_locator,
    make_sample_id,
)
from fusionrs.core.storage import ReadRefused, Storage
from fusionrs.dataset.schema import (
    BAD_RECORD,
    DUPLICATE_RECORD,
    FILE_TOO_LARGE,
    MISSING_FILE,
    NOT_A_REGULAR_FILE,
    READ_ERROR,
    TRUNCATED_ARCHIVE,
)


def plan(src, storage: Storage, size: int) -> list[WorkUnit]:
    tars = storage.list_file_infos(src.root, src.shards, recursive=True)
    if not tars:
        raise SourceError(f"source {src.name}: no tar files match {src.shards!r} under {src.root}")
    units = []
    for uri, nbytes, mtime in tars:
        rel = uri[len(src.root.rstrip("/")) + 1:]
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", rel.rsplit(".", 1)[0])[-40:]
        ident = hashlib.sha256(f"{rel}\n{nbytes}\n{mtime}".encode("utf-8", "surrogatepass")).hexdigest()[:10]
        units.append(WorkUnit(unit_id=f"{src.name}.{stem}-{ident}", source=src.name, format=src.format,
                              root=src.root, path=uri, rel=rel))
    return units


def _split_member(name: str) -> tuple[str, str]:
    # webdataset convention: key = path up to the first dot of the basename.
    d, b = posixpath.split(name)
    stem, _, ext = b.partition(".")
    return posixpath.join(d, stem) if d else stem, ext


def read(unit: WorkUnit, storage: Storage, max_file_bytes: int) -> Iterator[SourceRecord]:
    seen: set[str] = set()

    def record(key: str, fields: dict[str, bytes], error: tuple[str, str] = ("", "")) -> SourceRecord:
        record_id = f"{unit.rel}/{key}"
        rec = SourceRecord(sample_id=make_sample_id(unit.source, record_id), source=unit.source,
                           source_format=unit.format, source_record_id=record_id, source_locator=record_id,
                           class_name=None, captions=[], image=fields.get("img_content"))
        caption = fields.get("caption", b"")
        try:
            rec.captions = [caption.decode("utf-8")]
        except UnicodeDecodeError:
            error = error if error[0] else (BAD_RECORD, "the caption is not UTF-8 text")
        if record_id in seen and not error[0]:
            error = (DUPLICATE_RECORD, "the same key appears again in this tar")
        elif rec.image is None and not error[0]:
            error = (MISSING_FILE, "no img_content member")
        seen.add(record_id)
        if error[0]:
            rec.read_error, rec.read_detail, rec.image = error[0], error[1], None
        return rec

    try:
        storage.check_archive(unit.path, unit.root)
    except (ReadRefused, FileNotFoundError) as e:
        reason = getattr(e, "reason", MISSING_FILE)
        yield record("#archive", {}, (reason, getattr(e, "detail", "the tar is gone")))
        return
    key, fields, bad = None, {}, ("", "")
    try:
        with storage.open_input(unit.path) as raw, tarfile.open(fileobj=(f := _Counting(raw)), mode="r|*") as tar:
            for m in tar:
                if m.isdir():
                    continue
                try:
                    k, ext = _split_member(clean_locator(m.name))
                    problem = ("", "")
                except RecordRejected as e:
                    k, ext, problem = f"#member-{_printable_key(m.name)}", "", (e.reason, e.detail)
                if not problem[0] and not m.isfile():
                    problem = (NOT_A_REGULAR_FILE, "a link or device member")
                if not problem[0] and m.size > max_file_bytes:
                    problem = (FILE_TOO_LARGE, f"member of {m.size} bytes > ingest.max_file_bytes {max_file_bytes}")
                # A new key, or a field the current record already has (an adjacent duplicate key):
                # the current record is complete.
                if key is not None and (k != key or ext in fields):
                    yield record(key, fields, bad)
                    fields, bad = {}, ("", "")
                key = k
                if problem[0]:
                    bad = bad if bad[0] else problem
                    continue
                data = tar.extractfile(m).read()
                if len(data) != m.size:  # stream mode reads a cut-off member short, without an error
                    bad = (TRUNCATED_ARCHIVE, f"{ext} member cut off at {len(data)} of {m.size} bytes")
                    raise EOFError("the tar ends inside a member")
                fields[ext] = data
            # Python's tarfile ends quietly when a tar is cut at a header; a complete tar ends
            # with two zero blocks after its last member.
            if f.drain() < tar.offset + 2 * tarfile.BLOCKSIZE:
                raise EOFError("the tar ends without its end-of-archive blocks")
    except (tarfile.TarError, EOFError, OSError) as e:
        # The tar breaks off: what was read stays; the rest is one reject row.
        if key is not None:
            yield record(key, fields, bad)
        reason = READ_ERROR if isinstance(e, OSError) else TRUNCATED_ARCHIVE  # EOFError: the tar breaks off
        yield record("#truncated", {}, (reason, f"{type(e).__name__} after {len(seen)} records"))
        return
    if key is not None:
        yield record(key, fields, bad)


class _Counting:
    """A read-only stream that counts the bytes it hands out (uncompressed tars only)."""

    def __init__(self, raw):
        self.raw, self.count = raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.count += len(data)
        return data

    def drain(self) -> int:
        """Read to the end; the total length."""
        while self.read(1 << 20):
            pass
        return self.count


def _printable_key(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
