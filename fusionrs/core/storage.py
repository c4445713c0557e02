"""Every path is a URI: a local path, `s3://bucket/prefix`, or any other scheme pyarrow.fs
speaks (gs://, abfs://, hdfs://, ...; an unsupported one fails with pyarrow's own message).

S3 goes through `pyarrow.fs.S3FileSystem`, which uses the standard AWS credential chain
(environment, shared config, instance role). An endpoint for MinIO or any S3-compatible store
comes from `storage.s3_endpoint` or `AWS_ENDPOINT_URL`. Credentials are never stored here, so
they cannot reach a config dump, a manifest or an exception text.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import posixpath
import stat
import time
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

CHUNK = 1 << 20

# Why a bounded read refuses a file (reject reasons of the build: dataset/schema.py lists them).
NOT_A_REGULAR_FILE = "not_a_regular_file"  # a FIFO, a device, a folder where a file should be
FILE_TOO_LARGE = "file_too_large"
READ_TIMEOUT = "read_timeout"
OUTSIDE_ROOT = "outside_root"  # a symlink that leads out of the source root


class ReadRefused(Exception):
    """A file that a bounded read will not read (reason code + detail, never a path's secrets)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Storage:
    """Picklable handle: ships to Ray workers, which rebuild the filesystem lazily."""

    s3_endpoint: str = ""
    s3_region: str = "us-east-1"

    @classmethod
    def from_config(cls, cfg) -> "Storage":
        return cls(s3_endpoint=cfg.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL", ""), s3_region=cfg.s3_region)

    @classmethod
    def from_env(cls) -> "Storage":
        """S3 endpoint from AWS_ENDPOINT_URL (training and evaluation, which take no storage section)."""
        return cls(s3_endpoint=os.environ.get("AWS_ENDPOINT_URL", ""))

    def resolve(self, uri: str) -> tuple[pafs.FileSystem, str]:
        if uri.startswith("s3://"):
            return _s3(self.s3_endpoint, self.s3_region), uri[len("s3://"):]
        if "://" in uri and not uri.startswith("file://"):
            return pafs.FileSystem.from_uri(uri)  # gs://, abfs://, hdfs://: pyarrow's own (or its error)
        return pafs.LocalFileSystem(), os.path.abspath(uri.removeprefix("file://"))

    def is_local(self, uri: str) -> bool:
        return "://" not in uri or uri.startswith("file://")

    # -- reading ---------------------------------------------------------------------
    def read_bytes(self, uri: str) -> bytes:
        fs, path = self.resolve(uri)
        with fs.open_input_stream(path) as f:
            return f.read()

    def read_bounded(self, uri: str, max_bytes: int, within: str = "", timeout_s: float = 0.0) -> bytes:
        """Read an untrusted source file: regular files only (a FIFO would block forever, a device
        never ends), at most `max_bytes`, within `timeout_s`, and — locally — only if its real path
        (symlinks resolved) stays inside `within`. Raises ReadRefused(reason) or FileNotFoundError."""
        fs, path = self.resolve(uri)
        if isinstance(fs, pafs.LocalFileSystem):
            real = os.path.realpath(path)
            if within and not _inside(real, _real_root(self.resolve(within)[1])):
                raise ReadRefused(OUTSIDE_ROOT, "a symbolic link leads out of the source root")
            st = os.stat(real)  # FileNotFoundError for a missing file or a dangling link
            if not stat.S_ISREG(st.st_mode):
                raise ReadRefused(NOT_A_REGULAR_FILE, _kind(st.st_mode))
            size = st.st_size
            stream = open(real, "rb")
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise FileNotFoundError(uri)
            if info.type != pafs.FileType.File:
                raise ReadRefused(NOT_A_REGULAR_FILE, info.type.name.lower())
            size = info.size or 0
            stream = fs.open_input_stream(path)
        if size > max_bytes:
            stream.close()
            raise ReadRefused(FILE_TOO_LARGE, f"{size} bytes > ingest.max_file_bytes {max_bytes}")
        deadline = time.monotonic() + timeout_s if timeout_s else None
        parts, total = [], 0
        with stream:
            while True:
                block = stream.read(CHUNK)
                if not block:
                    break
                total += len(block)
                if total > max_bytes:  # it grew while being read
                    raise ReadRefused(FILE_TOO_LARGE, f"more than ingest.max_file_bytes {max_bytes} bytes")
                parts.append(block)
                if deadline and time.monotonic() > deadline:
                    raise ReadRefused(READ_TIMEOUT, f"not read within ingest.read_timeout_s {timeout_s}")
        return b"".join(parts)

    def check_archive(self, uri: str, within: str) -> None:
        """A tar to stream: a regular file whose real path stays inside the source root."""
        fs, path = self.resolve(uri)
        if isinstance(fs, pafs.LocalFileSystem):
            real = os.path.realpath(path)
            if not _inside(real, _real_root(self.resolve(within)[1])):
                raise ReadRefused(OUTSIDE_ROOT, "a symbolic link leads out of the source root")
            if not stat.S_ISREG(os.stat(real).st_mode):
                raise ReadRefused(NOT_A_REGULAR_FILE, _kind(os.stat(real).st_mode))

    def open_input(self, uri: str):
        fs, path = self.resolve(uri)
        return fs.open_input_file(path)

    def open_input_stream(self, uri: str):
        fs, path = self.resolve(uri)
        return fs.open_input_stream(path)

    def exists(self, uri: str) -> bool:
        fs, path = self.resolve(uri)
        return fs.get_file_info(path).type != pafs.FileType.NotFound

    def list_files(self, uri: str, pattern: str = "*", recursive: bool = False) -> list[str]:
        """Files under `uri` whose relative path matches `pattern`; sorted, as URIs."""
        return [u for u, _, _ in self.list_file_infos(uri, pattern, recursive)]

    def list_file_infos(self, uri: str, pattern: str = "*", recursive: bool = False) -> list[tuple[str, int, int]]:
        """(URI, size, mtime in ns) of the files under `uri` whose relative path matches `pattern`."""
        fs, path = self.resolve(uri)
        info = fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
        out = []
        for f in info:
            if f.type != pafs.FileType.File:
                continue
            rel = posixpath.relpath(f.path, path) if not isinstance(fs, pafs.LocalFileSystem) else os.path.relpath(f.path, path)
            if fnmatch.fnmatch(rel, pattern):
                out.append((join(uri, rel), int(f.size or 0), int(f.mtime_ns or 0)))
        return sorted(out)

    def parquet_metadata(self, uri: str) -> dict[str, str]:
        """Key-value metadata of a Parquet file (footer read only)."""
        fs, path = self.resolve(uri)
        with fs.open_input_file(path) as f:
            md = pq.read_schema(f).metadata or {}
        return {k.decode(): v.decode() for k, v in md.items() if not k.startswith(b"ARROW")}

    def read_parquet(self, uri: str, columns: list[str] | None = None) -> pa.Table:
        fs, path = self.resolve(uri)
        return pq.read_table(path, filesystem=fs, columns=columns)

    # -- writing: atomic per file, so a reader never sees half a file -----------------
    def write_bytes(self, uri: str, data: bytes) -> None:
        fs, path = self.resolve(uri)
        if isinstance(fs, pafs.LocalFileSystem):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic on POSIX
        else:
            # An S3 PUT becomes visible whole or not at all.
            with fs.open_output_stream(path) as f:
                f.write(data)

    def write_parquet(self, uri: str, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        # JPEG bytes do not compress: spend zstd only on the other columns.
        codecs = {f.name: ("none" if pa.types.is_binary(f.type) else "zstd") for f in table.schema}
        pq.write_table(table, sink, compression=codecs)
        self.write_bytes(uri, sink.getvalue().to_pybytes())

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode())

    def delete(self, uri: str) -> None:
        fs, path = self.resolve(uri)
        if fs.get_file_info(path).type == pafs.FileType.File:
            fs.delete_file(path)


@functools.lru_cache(maxsize=64)
def _real_root(path: str) -> str:
    return os.path.realpath(path)


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISDIR, "directory"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "not a regular file"


@functools.lru_cache(maxsize=8)
def _s3(endpoint: str, region: str) -> pafs.S3FileSystem:
    kwargs = {"region": region}
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        if endpoint.startswith("http://"):
            kwargs["scheme"] = "http"
    return pafs.S3FileSystem(**kwargs)


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI; an absolute part or a URI part replaces what came before.
    Trusted parts only (config values, our own names): a source record's locator goes through
    readers.base.locate, which never lets a record leave its source root."""
    out = uri
    for p in parts:
        if not p:
            continue
        if "://" in p or p.startswith("/"):
            out = p
        elif "://" in out:
            out = out.rstrip("/") + "/" + p.replace(os.sep, "/")
        else:
            out = os.path.join(out, p)
    return out
