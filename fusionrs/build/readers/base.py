"""The common record and work unit shared by all source formats."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

READ_ERROR_MISSING = "missing_file"
READ_ERROR_IO = "read_error"
DUPLICATE_RECORD = "duplicate_record_id"


def make_sample_id(source: str, record_id: str) -> str:
    """Stable id: source name + hash of the source's own record id (independent of order)."""
    return f"{source}-{hashlib.sha256(record_id.encode()).hexdigest()[:16]}"


@dataclass
class SourceRecord:
    sample_id: str
    source: str
    source_format: str
    source_record_id: str
    source_locator: str  # path relative to the source root (or tar member), never absolute
    class_name: str | None
    captions: list[str]
    image: bytes | None  # None with read_error set when the bytes could not be read
    read_error: str = ""


@dataclass
class WorkUnit:
    """One shard of one source: the unit of scheduling, retry, resume and output naming."""

    unit_id: str
    source: str
    format: str
    root: str
    entries: list[dict] = field(default_factory=list)  # format-specific record descriptions
    path: str = ""  # rs5m_wds: the tar file

    def to_row(self) -> dict:
        d = asdict(self)
        d["entries"] = json.dumps(d["entries"])
        return d

    @classmethod
    def from_row(cls, row: dict) -> "WorkUnit":
        d = dict(row)
        d["entries"] = json.loads(d["entries"]) if isinstance(d["entries"], str) else d["entries"]
        return cls(**{k: d[k] for k in ("unit_id", "source", "format", "root", "entries", "path")})


def chunk_entries(source: str, fmt: str, root: str, entries: list[dict], size: int) -> list[WorkUnit]:
    """Cut a planned entry list into units. Duplicate record ids are flagged, not dropped."""
    seen: set[str] = set()
    for e in entries:
        if e["record_id"] in seen:
            e["duplicate"] = True
        seen.add(e["record_id"])
    return [WorkUnit(unit_id=f"{source}-{i // size:05d}", source=source, format=fmt, root=root,
                     entries=entries[i:i + size]) for i in range(0, len(entries), size)]


def safe_locator(path: str) -> str:
    p = path.replace("\\", "/").lstrip("/")
    if any(part == ".." for part in p.split("/")):
        raise ValueError(f"locator {path!r} escapes the source root")
    return p
