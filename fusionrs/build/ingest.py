"""Ingest stage: read a unit's records, decode and validate images, clean captions, hash.

Plain functions over one work unit; the build wires them into Ray Data, tests call them
directly. Every record comes out as exactly one row: either usable (rgb_jpeg, hashes, caption)
or a reject with `reject_reason` set. Nothing is dropped.
"""

from __future__ import annotations

import pyarrow as pa

from fusionrs.build.clean import CaptionCleaner, caption_key
from fusionrs.build.readers import SourceRecord, WorkUnit, make_sample_id, read_unit
from fusionrs.core.images import ImageReject, decode_rgb, encode_jpeg, limit_side, phash64, phash_hex, sha256_hex
from fusionrs.dataset.schema import READ_ERROR

INGEST_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("source", pa.string()),
    ("source_format", pa.string()),
    ("source_record_id", pa.string()),
    ("source_locator", pa.string()),
    ("class_name", pa.string()),
    ("raw_captions", pa.list_(pa.string())),
    ("caption", pa.string()),
    ("captions", pa.list_(pa.string())),
    ("caption_status", pa.string()),
    ("caption_sentence_reasons", pa.list_(pa.string())),
    ("caption_key", pa.string()),  # §3.4 key of `caption`; null for class fallbacks (not content)
    ("rgb_jpeg", pa.binary()),
    ("rgb_sha256", pa.string()),  # of the source file's bytes
    ("rgb_phash", pa.string()),
    ("rgb_width", pa.int32()),
    ("rgb_height", pa.int32()),
    ("image_note", pa.string()),
    ("reject_reason", pa.string()),  # null for usable rows
    ("reject_detail", pa.string()),
])


def ingest_record(rec: SourceRecord, cfg, cleaner: CaptionCleaner) -> dict:
    ing = cfg.ingest
    row = {
        "sample_id": rec.sample_id, "source": rec.source, "source_format": rec.source_format,
        "source_record_id": rec.source_record_id, "source_locator": rec.source_locator,
        "class_name": rec.class_name, "raw_captions": list(rec.captions), "captions": [],
        "caption_sentence_reasons": [],
    }
    # Captions first: a sample without caption or class label is a reject whatever its image.
    res = cleaner.clean(rec.captions, rec.source_format, rec.class_name)
    row.update(caption=res.caption, captions=res.captions, caption_status=res.status,
               caption_sentence_reasons=res.sentence_reasons,
               caption_key=None if res.is_fallback else caption_key(res.caption))
    if rec.read_error:
        return _reject(row, rec.read_error, rec.read_detail)
    try:
        img = decode_rgb(rec.image, max_pixels=ing.max_pixels, min_side=ing.min_side,
                         grayscale=ing.grayscale, max_transparent_fraction=ing.max_transparent_fraction)
    except ImageReject as e:
        return _reject(row, e.reason, e.detail)
    # A JPEG that needs no conversion and no resize is kept byte for byte: re-encoding it would
    # only add a second generation of JPEG loss (and cost an encode).
    as_is = img.format == "JPEG" and not img.note and max(img.width, img.height) <= ing.max_side
    row.update(
        rgb_sha256=sha256_hex(rec.image), rgb_phash=phash_hex(phash64(img.rgb)),
        rgb_width=img.width, rgb_height=img.height, image_note=img.note or None,
        rgb_jpeg=rec.image if as_is else encode_jpeg(limit_side(img.rgb, ing.max_side), ing.jpeg_quality),
    )
    if res.rejected:
        return _reject(row, res.status.split(":")[0], res.status)
    row["reject_reason"] = None
    return row


def _reject(row: dict, reason: str, detail: str) -> dict:
    row["reject_reason"] = reason
    row["reject_detail"] = detail or None
    row["rgb_jpeg"] = None  # rejects carry no image payload
    return row


def ingest_unit(unit: WorkUnit, cfg, storage, cleaner: CaptionCleaner) -> pa.Table:
    """Every record of the unit as one row. An error the reader did not turn into a reject (a
    bug, or a storage failure mid-stream) keeps the rows read so far and ends the unit with one
    reject row saying so: one bad record never sinks the unit, the build, or the units beside it."""
    rows = []
    records = read_unit(unit, storage, cfg.ingest.max_file_bytes, cfg.ingest.read_timeout_s)
    try:
        for rec in records:
            rows.append(ingest_record(rec, cfg, cleaner))
    except Exception as e:  # noqa: BLE001 - reported as a reject row, with its type only
        rid = f"{unit.rel or unit.unit_id}/#after-{len(rows)}"
        rows.append(_reject({"sample_id": make_sample_id(unit.source, rid), "source": unit.source,
                             "source_format": unit.format, "source_record_id": rid, "source_locator": "",
                             "class_name": None, "raw_captions": [], "captions": [], "caption_sentence_reasons": []},
                            READ_ERROR, f"the unit stopped after {len(rows)} records: {type(e).__name__}"))
    return pa.Table.from_pylist(rows, schema=INGEST_SCHEMA)
