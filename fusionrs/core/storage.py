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
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


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
        fs, path = self.resolve(uri)
        info = fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
        out = []
        for f in info:
            if f.type != pafs.FileType.File:
                continue
            rel = posixpath.relpath(f.path, path) if not isinstance(fs, pafs.LocalFileSystem) else os.path.relpath(f.path, path)
            if fnmatch.fnmatch(rel, pattern):
                out.append(join(uri, rel))
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
