"""The dataset's contract: every column, type and status word of the build's output, once.

The build writes these tables; training, evaluation and reports read them. Nothing else types a
column name or a status word: they import them from here. docs/schema.md is generated from this
module (`python -m fusionrs.dataset.schema > docs/schema.md`; a test keeps the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from fusionrs.core.storage import FILE_TOO_LARGE, NOT_A_REGULAR_FILE, OUTSIDE_ROOT, READ_TIMEOUT

SPLITS = ("train", "val", "test")
HELDOUT = ("val", "test")

# ir_status: translation outcome per row (rows with any other value are rejects).
IR_OK = "ok"

# ir_caption_status: the IR-aware caption of a triplet.
IR_CAPTION_ACCEPTED = "accepted"  # passed the filter: train on these
IR_CAPTION_NOT_SELECTED = "not_selected"  # not in the IR-aware subset
IR_CAPTION_FILTERED = "filtered:"  # prefix; then the filter codes joined by "+"
IR_CAPTION_FAILED = "failed:"  # prefix; then why the captioner gave nothing
IR_CAPTION_NOT_CAPTIONED = IR_CAPTION_FAILED + "not_captioned"

# Raw captioner outcome (stage files, before the filter).
CAPTION_RAW_OK = "ok"

# caption_status of the original caption.
CAPTION_ORIGINAL = "original"
CAPTION_ORIGINAL_STRIPPED = "original_stripped"
CAPTION_FALLBACK = "fallback_class"  # written as "fallback_class:<reason of the first sentence>"

# Reject stages.
STAGE_INGEST = "ingest"
STAGE_TRANSLATE = "translate"

# Reject reasons of reading a source record (build/readers, core/storage).
MISSING_FILE = "missing_file"
READ_ERROR = "read_error"  # an I/O error the storage reported (the detail says which kind)
# NOT_A_REGULAR_FILE, FILE_TOO_LARGE (over ingest.max_file_bytes), READ_TIMEOUT (over
# ingest.read_timeout_s), OUTSIDE_ROOT: core/storage.py's bounded read refuses with these.
UNSAFE_LOCATOR = "unsafe_locator"  # absolute, `..`, a URI scheme, NUL or control characters
BAD_RECORD = "bad_record"  # an annotation entry without a filename, of the wrong type, or with undecodable text
DUPLICATE_RECORD = "duplicate_record_id"  # the same record listed twice in a source
DUPLICATE_SAMPLE = "duplicate_sample_id"
TRUNCATED_ARCHIVE = "truncated_archive"  # the records of a tar after the point where it breaks off


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    doc: str


TRIPLET_COLUMNS = [
    Column("sample_id", pa.string(), "`<source>-<16 hex of sha256(source_record_id)>`: stable across reruns, shardings and orders"),
    Column("source", pa.string(), "the source's configured `name` (RS5M, SkyScript, NWPU, RSICD, RSITMD, ...)"),
    Column("source_record_id", pa.string(), "the source's own id: file path relative to the root, NWPU `class/file`, RS5M `tar/key`"),
    Column("source_locator", pa.string(), "path relative to the source root (never absolute, never `..`)"),
    Column("split", pa.string(), "train / val / test"),
    Column("group_id", pa.string(), "joint group (RGB and IR pHash64 Hamming ≤ r, exact RGB and IR SHA-256, equal "
           "normalized caption); `group-` + 20 hex of sha256 of its sorted member ids"),
    Column("group_size", pa.int64(), "members of the group in this build"),
    Column("is_eval_representative", pa.bool_(), "the one row per val/test group to evaluate on (smallest translated sample_id)"),
    Column("class_name", pa.string(), "class label where the source has one (NWPU), else null"),
    Column("caption", pa.string(), "the first caption sentence that passed cleaning, or the class-name fallback"),
    Column("captions", pa.list_(pa.string()), "all sentences that passed cleaning"),
    Column("caption_status", pa.string(), "`original`, `original_stripped` (boilerplate or control characters removed), "
           "`fallback_class:<reason of the first sentence>`"),
    Column("normalized_caption_key", pa.string(), "sha256 of the §3.4 normalized caption; null for fallbacks (not content, never grouped)"),
    Column("rgb_jpeg", pa.binary(), "RGB image as JPEG: the source bytes when they are already an upright RGB JPEG within "
           "`ingest.max_side`, else re-encoded (quality `ingest.jpeg_quality`, longest side ≤ `ingest.max_side`)"),
    Column("rgb_sha256", pa.string(), "sha256 of the source file's bytes"),
    Column("rgb_phash", pa.string(), "pHash64 (16 hex), official definition, of the upright image"),
    Column("image_note", pa.string(), "normalisation applied: `exif_rotated`, `cmyk_to_rgb`, `alpha_dropped`, `palette_to_rgb`, "
           "`16bit_to_8bit`, `gray_to_rgb` (only with `ingest.grayscale=convert`)"),
    Column("ir_jpeg", pa.binary(), "infrared-style image: JPEG, PIL RGB mode, `translate.resolution`² px, validated"),
    Column("ir_status", pa.string(), f"`{IR_OK}` (rows with other statuses are in rejects)"),
    Column("ir_sha256", pa.string(), "sha256 of `ir_jpeg`"),
    Column("ir_phash", pa.string(), "pHash64 (16 hex) of the IR image"),
    Column("ir_aware_caption", pa.string(), "the captioner's output, null when not selected or failed"),
    Column("ir_caption_status", pa.string(), f"`{IR_CAPTION_NOT_SELECTED}`, `{IR_CAPTION_ACCEPTED}`, "
           f"`{IR_CAPTION_FILTERED}<code>+<code>` (kept for audit; do not train on it), `{IR_CAPTION_FAILED}<code>`"),
    Column("ir_caption_cost_usd", pa.float64(), "API cost of this row's caption (0 for offline captioners)"),
]

REJECT_COLUMNS = [
    Column("sample_id", pa.string(), "as in triplets; an annotation entry refused before reading is `#entry-<position>` in `source_record_id`"),
    Column("source", pa.string(), "as in triplets"),
    Column("source_record_id", pa.string(), "as in triplets"),
    Column("source_locator", pa.string(), "as in triplets; empty for an entry whose locator was refused (`detail` shows it, escaped)"),
    Column("stage", pa.string(), f"`{STAGE_INGEST}` or `{STAGE_TRANSLATE}`"),
    Column("reason", pa.string(), "a reason code (below)"),
    Column("detail", pa.string(), "free text (e.g. image size, decoder message)"),
    Column("caption_status", pa.string(), "the caption decision, even when the image was the problem"),
    Column("raw_captions", pa.list_(pa.string()), "the source's sentences, unmodified"),
]

TRIPLET_SCHEMA = pa.schema([(c.name, c.type) for c in TRIPLET_COLUMNS])
REJECT_SCHEMA = pa.schema([(c.name, c.type) for c in REJECT_COLUMNS])

# Reason codes of reject rows, by where they arise (the modules that raise them import these lists' words).
REJECT_REASONS = {
    "reading": [MISSING_FILE, READ_ERROR, NOT_A_REGULAR_FILE, FILE_TOO_LARGE, READ_TIMEOUT, UNSAFE_LOCATOR, OUTSIDE_ROOT,
                BAD_RECORD, DUPLICATE_RECORD, DUPLICATE_SAMPLE, TRUNCATED_ARCHIVE],
    "image": ["empty_file", "not_an_image", "truncated_or_corrupt", "too_many_pixels", "too_small",
              "grayscale_source", "mostly_transparent", "unsupported_mode"],
    "caption": ["no_usable_caption"],
    "translate": ["ir_decode_failed", "ir_wrong_mode", "ir_wrong_size", "ir_blank", "ir_nonfinite",
                  "seg_map_missing", "translate_error:<type>"],
}


def markdown() -> str:
    """docs/schema.md."""
    def table(cols: list[Column]) -> str:
        rows = ["| column | type | meaning |", "|---|---|---|"]
        rows += [f"| {c.name} | {_type_name(c.type)} | {c.doc} |" for c in cols]
        return "\n".join(rows)

    reasons = "\n".join(f"- {where}: " + ", ".join(f"`{r}`" for r in rs) for where, rs in REJECT_REASONS.items())
    return f"""# Output schema

Generated from `fusionrs/dataset/schema.py` (`python -m fusionrs.dataset.schema > docs/schema.md`); a
test keeps this file equal to the code.

## `triplets/<part>-<split>.parquet`

One row per RGB–IR–text triplet; one file per part and split (so `datasets.load_dataset(OUT)`
finds each split by name, `triplets/*-<split>.parquet`, while the split is also a column). Part
names are `<source>.<unit hash>` (`<source>.<tar>-<hash>-pNNN` for webdataset sources): the hash
covers the unit's inputs, so names are deterministic and change only when those inputs do.

{table(TRIPLET_COLUMNS)}

Read with `fusionrs.load(OUT, split="train")` (a Ray Dataset), `datasets.load_dataset(OUT)`,
`pyarrow.dataset.dataset(OUT + "/triplets")` or `ray.data.read_parquet(...)`. Train on
`ir_caption_status == "{IR_CAPTION_ACCEPTED}"` for IR-aware captions.

## `rejects/<part>.parquet`

One row per input record that is not a triplet: nothing is dropped silently.

{table(REJECT_COLUMNS)}

Reason codes:
{reasons}

`no_usable_caption` carries the first sentence's reason in `caption_status`
(`no_usable_caption:<reason>`). Caption sentence reasons: `ok`, `ok_stripped_boilerplate`, `ok_stripped_control` (control, zero-width
or bidi characters removed), `empty`,
`boilerplate_only`, `non_english`, `too_short`, `too_long`, `generic`, `no_content`, `weak_rs5m`.

IR-aware caption filter codes (in `ir_caption_status` after `{IR_CAPTION_FILTERED}`): `thermal_signature`,
`heat`, `temperature`, `emissivity_radiance`, `reflectivity`, `material_property`, `rgb_color`
(strict-v3, verbatim regexes), `empty`, `too_short`, `too_long`, `repeats_original_without_ir_cues`,
`weak_ir_cues`.
"""


def _type_name(t: pa.DataType) -> str:
    return {pa.string(): "string", pa.binary(): "binary", pa.int64(): "int64", pa.bool_(): "bool",
            pa.float64(): "float64"}.get(t, str(t))


if __name__ == "__main__":
    print(markdown(), end="")
