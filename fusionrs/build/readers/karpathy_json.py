"""Karpathy-style caption JSON (RSICD `dataset_rsicd.json`, RSITMD `dataset_RSITMD.json`, UCM,
Sydney): `{"images": [{"filename", "filepath"?, "split", "sentences": [{"raw"}]}]}`."""

from __future__ import annotations

from fusionrs.build.readers.base import (
    RecordRejected,
    SourceError,
    WorkUnit,
    chunk_entries,
    clean_locator,
    entry,
    read_json_annotations,
    rejected_entry,
    text_field,
)
from fusionrs.config.build import full_uri
from fusionrs.core.storage import Storage


def plan(src, storage: Storage, size: int) -> list[WorkUnit]:
    doc = read_json_annotations(storage, full_uri(src.root, src.annotations), src.name, drop=("tokens",))
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list):
        raise SourceError(f"source {src.name}: {src.annotations} has no 'images' list (Karpathy format)")
    return chunk_entries(src.name, src.format, src.root, [_entry(i, img) for i, img in enumerate(images)], size)


def _entry(i: int, img) -> dict:
    if not isinstance(img, dict):
        return rejected_entry(i, "bad_record", f"images[{i}] is a {type(img).__name__}, not an object")
    name = img.get("filename")
    try:
        folder = img.get("filepath") or ""
        if folder and not isinstance(folder, str):
            raise RecordRejected("bad_record", f"filepath is a {type(folder).__name__}")
        locator = clean_locator("/".join(p for p in (folder, name) if p) if isinstance(name, str) and name else name)
        sentences = img.get("sentences", [])
        if not isinstance(sentences, list):
            raise RecordRejected("bad_record", f"sentences is a {type(sentences).__name__}, not a list")
        captions = []
        for k, sent in enumerate(sentences):
            if not isinstance(sent, dict):
                raise RecordRejected("bad_record", f"sentences[{k}] is a {type(sent).__name__}, not an object")
            captions.append(text_field(sent.get("raw", ""), f"sentences[{k}].raw"))
    except RecordRejected as e:
        return rejected_entry(i, e.reason, f"images[{i}]: {e.detail}", name)
    return entry(locator, locator, captions)
