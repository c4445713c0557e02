"""The common record and work unit shared by all source formats, and the rules that keep a
record inside its source root (docs/security.md).

A source record can only read inside its root: its locator is a relative path, normalised, with
no scheme, no `..`, no absolute part, no NUL or control character (`clean_locator`); the file is
read by `Storage.read_bounded`, which also refuses symlinks that lead out of the root, anything
but a regular file, files over `ingest.max_file_bytes` and reads past `ingest.read_timeout_s`. A
record that breaks a rule is a reject row with its own reason code, never a plan-time abort.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import unicodedata
from dataclasses import asdict, dataclass, field

from fusionrs.dataset.schema import BAD_RECORD, DUPLICATE_RECORD, UNSAFE_LOCATOR

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # file:, s3:, http:, C: (a drive) ...


def make_sample_id(source: str, record_id: str) -> str:
    """Stable id: source name + hash of the source's own record id (independent of order)."""
    return f"{source}-{hashlib.sha256(record_id.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


class RecordRejected(Exception):
    """A record the reader cannot take (reason code, detail)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def printable(value: object, limit: int = 200) -> str:
    """A value as text that is safe in a report: escapes for NUL, controls and lone surrogates."""
    text = value if isinstance(value, str) else repr(value)
    return text[:limit] if _is_clean(text) else text.encode("unicode_escape").decode("ascii")[:limit]


def _is_clean(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(unicodedata.category(c) in ("Cc", "Cf") for c in text)


def clean_locator(raw: object) -> str:
    """A source-relative path, normalised; raises RecordRejected for anything else."""
    if raw is None or raw == "":
        raise RecordRejected(BAD_RECORD, "no file name")
    if not isinstance(raw, str):
        raise RecordRejected(BAD_RECORD, f"file name is a {type(raw).__name__}, not a string")
    if not _is_clean(raw):
        raise RecordRejected(UNSAFE_LOCATOR, "NUL, control or undecodable characters in the file name")
    p = raw.replace("\\", "/")
    if "://" in p or _SCHEME.match(p):
        raise RecordRejected(UNSAFE_LOCATOR, "a URI or drive, not a path relative to the source root")
    if p.startswith("/"):
        raise RecordRejected(UNSAFE_LOCATOR, "an absolute path, not one relative to the source root")
    if ".." in p.split("/"):
        raise RecordRejected(UNSAFE_LOCATOR, "`..` would leave the source root")
    p = posixpath.normpath(p)  # "./a.jpg" and "a//b.jpg" name the same file as "a.jpg", "a/b.jpg"
    if p in ("", "."):
        raise RecordRejected(BAD_RECORD, "no file name")
    return p


def text_field(value: object, what: str) -> str:
    """A caption or label from an annotation file: a string that encodes as UTF-8."""
    if not isinstance(value, str):
        raise RecordRejected(BAD_RECORD, f"{what} is a {type(value).__name__}, not a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordRejected(BAD_RECORD, f"{what} holds undecodable text (a lone surrogate)") from None
    return value


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
    read_detail: str = ""


@dataclass
class WorkUnit:
    """One shard of one source: the unit of scheduling, retry, resume and output naming.

    `unit_id` carries a hash of the unit's inputs (its entries, or a tar's path, size and
    modification time), so editing an annotation or replacing a tar changes the ids of exactly
    the units it touches: a rerun redoes those and reuses the rest."""

    unit_id: str
    source: str
    format: str
    root: str
    entries: list[dict] = field(default_factory=list)  # format-specific record descriptions
    path: str = ""  # rs5m_wds: the tar file
    rel: str = ""  # rs5m_wds: the tar's path relative to the root

    def to_row(self) -> dict:
        d = asdict(self)
        d["entries"] = json.dumps(d["entries"])
        return d

    @classmethod
    def from_row(cls, row: dict) -> "WorkUnit":
        d = dict(row)
        d["entries"] = json.loads(d["entries"]) if isinstance(d["entries"], str) else d["entries"]
        return cls(**{k: d[k] for k in ("unit_id", "source", "format", "root", "entries", "path", "rel")})


def entry(record_id: str, locator: str, captions: list[str], class_name: str | None = None) -> dict:
    return {"record_id": record_id, "locator": locator, "captions": captions, "class_name": class_name}


def rejected_entry(source_index: int, reason: str, detail: str, raw_locator: object = "", captions=()) -> dict:
    """An annotation entry that cannot be read: it becomes a reject row, identified by its
    position in the annotation file (stable for that file). Its locator stays empty (the schema
    promises a relative path there); the detail shows the offending value, escaped."""
    shown = f" ({printable(raw_locator)!s})" if raw_locator not in (None, "") else ""
    return {"record_id": f"#entry-{source_index}", "locator": "",
            "captions": [c for c in captions if isinstance(c, str) and _is_clean(c)], "class_name": None,
            "reject": reason, "detail": detail + shown}


def chunk_entries(source: str, fmt: str, root: str, entries: list[dict], size: int) -> list[WorkUnit]:
    """Cut a planned entry list into units of about `size` entries, at content-defined
    boundaries: a unit ends after a record whose id hashes to a boundary (once it holds at least
    size/2 records) or at 2·size. Inserting or removing one record moves at most the boundaries
    around it, so a rerun after an edit redoes the units it touched, not every later one.
    Duplicate record ids (the same record listed twice) are flagged, not dropped."""
    seen: set[str] = set()
    for e in entries:
        if e["record_id"] in seen and "reject" not in e:
            e.update(reject=DUPLICATE_RECORD, detail="the same record is listed again earlier in the source")
        seen.add(e["record_id"])
    half = max(1, size // 2)
    units, current = [], []
    for e in entries:
        current.append(e)
        h = int(hashlib.sha256(e["record_id"].encode("utf-8", "surrogatepass")).hexdigest()[:8], 16)
        if (len(current) >= half and h % half == 0) or len(current) >= 2 * size:
            units.append(current)
            current = []
    if current:
        units.append(current)
    return [WorkUnit(unit_id=f"{source}.{_digest(u)}", source=source, format=fmt, root=root, entries=u)
            for u in units]


class SourceError(ValueError):
    """A source that cannot be planned at all (missing root, unreadable annotations): a clear
    error naming the source and the file, before anything is written."""


def read_annotations(storage, uri: str, source: str) -> str:
    """An annotation file's text: UTF-8, non-empty, or a SourceError naming the file."""
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise SourceError(f"source {source}: annotations file {uri} does not exist") from None
    except OSError as e:
        raise SourceError(f"source {source}: annotations file {uri} cannot be read ({type(e).__name__})") from None
    if not data.strip():
        raise SourceError(f"source {source}: annotations file {uri} is empty")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SourceError(f"source {source}: annotations file {uri} is not UTF-8 text (byte {e.start})") from None


def read_json_annotations(storage, uri: str, source: str, drop: tuple[str, ...] = ()):
    """The parsed annotations file. `drop`: keys no planner reads, removed from every object as
    it is parsed, so the file's largest parts never exist all at once (Karpathy JSON's per-word
    `tokens` lists: ~170 MiB of the driver's peak for a 29 MB RSICD-sized file)."""
    hook = (lambda obj: {k: v for k, v in obj.items() if k not in drop}) if drop else None
    try:
        return json.loads(read_annotations(storage, uri, source), object_hook=hook)
    except json.JSONDecodeError as e:
        raise SourceError(f"source {source}: annotations file {uri} is not valid JSON (line {e.lineno}: {e.msg})") from None


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=True).encode()).hexdigest()[:12]
