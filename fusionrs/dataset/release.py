"""Release files for a completed build, and the verifier (docs/release.md).

    fusionrs release OUT     # write_release: redact machine paths, card, croissant.json, DATASHEET.md,
                             # licenses/sources.json, RELEASE_MANIFEST.json, SHA256SUMS
    fusionrs verify OUT      # verify: [] when fine, else every problem with its file
    cd OUT && sha256sum -c SHA256SUMS   # the checksums without fusionrs

    from fusionrs.dataset.release import verify, write_release
    write_release("out/demo/build"); assert verify("out/demo/build") == []

What is released is the output folder less the build's working state (`_stage/`, `_cache/`,
`ledger/`, `logs/`), hidden entries and interrupted-write temporaries. Release steps rewrite config.yaml,
manifest.json, stats.md and rejects/ with machine paths replaced by placeholders before
anything is hashed; they never touch a triplet row (a triplet with a path in its text is a
verifier problem, fixed by a takedown or a rebuild, never by rewriting data silently).
Running the release again on an unchanged folder writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from fusionrs.core.storage import Storage, join
from fusionrs.dataset.card import (
    CONFIG_FILE,
    IMAGE_COLUMNS,
    INITIAL_VERSION,
    RIGHTS_FILE,
    UNREVIEWED,
    release_date,
    rights_summary,
    saved_overrides,
    write_card,
)
from fusionrs.dataset.layout import TMP_MARK, split_of_file
from fusionrs.dataset.schema import (
    REJECT_COLUMNS,
    REJECT_SCHEMA,
    SPLITS,
    TRIPLET_COLUMNS,
    TRIPLET_SCHEMA,
)

MANIFEST_FILE = "manifest.json"
STATS_FILE = "stats.md"
RELEASE_MANIFEST = "RELEASE_MANIFEST.json"
SHA256SUMS = "SHA256SUMS"
CROISSANT_FILE = "croissant.json"
DATASHEET_FILE = "DATASHEET.md"
TOMBSTONES_FILE = "tombstones.json"
# The build's working state: reused by reruns, never part of the dataset (the caption cache
# holds paid API responses, the ledger run costs). Layout.own_dirs() names them too.
# Working state, costs, logs and the HTML report (it embeds thumbnails of rows a takedown may remove).
NOT_RELEASED = ("_stage", "_cache", "ledger", "logs", "report.html")
COMPLETED = "completed"  # manifest["status"] of a finished build (build/pipeline.py)

# The official sanitizer's replacement (reference §11: tools/sanitize_public_results.py).
PATH_PLACEHOLDER = "<machine-local-path-removed>"
# A machine-local path inside free text: a well-known root folder, a home-relative path, a drive
# letter, a UNC share or a file: URI. The character before it must not belong to a word, a URL
# or a relative path (so `https://host/data/x` and `triplets/x` are not paths). RE2-compatible,
# so the same pattern scans Parquet columns with pyarrow.compute.
_ROOTS = ("root|home|Users|tmp|var|mnt|media|Volumes|private|opt|srv|scratch|data|work|workspace|content|kaggle|"
          "nfs|lustre|gpfs|lscratch|dev/shm")
_PATH_START = rf"(?:/(?:{_ROOTS})(?:/|\b)|~/|[A-Za-z]:[\\/]|\\\\[\w.$-]+\\|file:/)"
MACHINE_PATH = rf"(?:^|[^\w.:/~-]){_PATH_START}"
MACHINE_PATH_RE = re.compile(MACHINE_PATH)
_REDACT_RE = re.compile(rf"(?P<pre>^|[^\w.:/~-]){_PATH_START}[^\s'\"`<>|,;)\]}}]*", re.MULTILINE)
# The official public-index verifier's rules for a locator value (reference §1.1, §1.2).
ABSOLUTE_LOCATOR = re.compile(r"^(?:/|[A-Za-z]:[\\/])")
PARENT_SEGMENT = re.compile(r"(?:^|/)\.\.(?:/|$)")
TEXT_SUFFIXES = (".md", ".json", ".jsonl", ".yaml", ".yml", ".txt", ".csv")


class ReleaseError(ValueError):
    """A build that cannot be released; `code` says why."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code


@dataclass(frozen=True)
class Problem:
    code: str  # reason code, e.g. sha256_mismatch, machine_path, cross_split_group
    file: str  # path relative to the output
    detail: str

    def __str__(self) -> str:
        return f"{self.code}: {self.file}: {self.detail}"


# ---------------------------------------------------------------------------------------
# Redaction.


def redact_text(text: str) -> tuple[str, int]:
    """Machine paths in free text replaced by the placeholder; (text, how many)."""
    return _REDACT_RE.subn(lambda m: m.group("pre") + PATH_PLACEHOLDER, text)


def redact_json(value, known: dict[str, str] | None = None):
    """Every string in a JSON-like value through redact_text; first, each `known` location (a
    source root, the output) is replaced by its own placeholder, as in the redacted config."""
    if isinstance(value, str):
        for loc, placeholder in sorted((known or {}).items(), key=lambda kv: -len(kv[0])):
            value = value.replace(loc, placeholder)
        return redact_text(value)[0]
    if isinstance(value, list):
        return [redact_json(v, known) for v in value]
    if isinstance(value, dict):
        return {k: redact_json(v, known) for k, v in value.items()}
    return value


def known_locations(config: dict) -> dict[str, str]:
    """{location: placeholder} of a (not yet redacted) config: the output and each source root."""
    out = {}
    for src in config.get("sources") or []:
        root = str(src.get("root", "")).rstrip("/")
        if root and not root.startswith("<"):
            out[root] = f"<source:{src.get('name', '')}>"
    output = str(config.get("output", "")).rstrip("/")
    if output and not output.startswith("<"):
        out[output] = "<output>"
    return out


# Config keys that name where things are on the operator's machines or storage (local paths,
# private buckets, endpoints): replaced whatever their scheme. Anything else that looks like a
# machine path is caught by redact_text.
LOCATION_KEYS = (("output",), ("storage", "s3_endpoint"), ("translate", "model"), ("translate", "sam_model"),
                 ("translate", "blip_model"), ("translate", "seg_path"), ("caption", "cache"))
CONFIG_HEADER = ("# Redacted for release (fusionrs release): source roots read <source:NAME>, other locations\n"
                 "# <redacted>, machine paths " + PATH_PLACEHOLDER + ". manifest.json's config_fingerprint\n"
                 "# was computed from the config before redaction.\n")


def redact_config(data: dict) -> dict:
    data = json.loads(json.dumps(data))  # a copy
    for src in data.get("sources") or []:
        root, placeholder = str(src.get("root", "")).rstrip("/"), f"<source:{src.get('name', '')}>"
        ann = str(src.get("annotations", "") or "")
        if ann:  # under the root: keep the relative part; elsewhere: keep only the file name
            rel = ann[len(root) + 1:] if root and ann.startswith(root + "/") else ann.rsplit("/", 1)[-1]
            src["annotations"] = f"{placeholder}/{rel}"
        src["root"] = placeholder
    for path in LOCATION_KEYS:
        node = data
        for k in path[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(path[-1]):
            node[path[-1]] = "<output>" if path == ("output",) else "<redacted>"
    return redact_json(data)


def _redact_table(table: pa.Table, known: dict[str, str]) -> tuple[pa.Table, int]:
    """Machine paths in every string column of a (rejects) table replaced; (table, cells changed)."""
    n = 0
    cols = []
    for col in table.columns:
        values = col.to_pylist()
        if pa.types.is_string(col.type) or (pa.types.is_list(col.type) and pa.types.is_string(col.type.value_type)):
            new = redact_json(values, known)
        else:
            cols.append(col)
            continue
        n += sum(a != b for a, b in zip(values, new))
        cols.append(pa.array(new, col.type))
    return pa.table(cols, schema=table.schema), n


# ---------------------------------------------------------------------------------------
# Writing the release.


def write_release(output: str, storage: Storage | None = None, rights: dict[str, str] | None = None,
                  url: str = "") -> dict:
    """Redact, then write the card, licenses/sources.json, DATASHEET.md, croissant.json,
    RELEASE_MANIFEST.json and SHA256SUMS. `rights`: rights codes for sources the table (§1.2)
    does not know, by source name (kept in licenses/sources.json for later releases). `url`:
    where the dataset will be published (croissant.json's `url`). Returns a summary."""
    storage = storage or Storage.from_env()
    manifest = _read_json(storage, join(output, MANIFEST_FILE))
    if manifest.get("status") != COMPLETED:
        raise ReleaseError("not_completed", f"{MANIFEST_FILE} status is {manifest.get('status')!r}: "
                                            "finish the build (rerun it) before releasing")
    redacted: dict[str, int] = {}
    config = yaml.safe_load(storage.read_bytes(join(output, CONFIG_FILE))) or {}
    clean_config = redact_config(config)
    redacted[CONFIG_FILE] = int(clean_config != config)
    storage.write_text(join(output, CONFIG_FILE), CONFIG_HEADER + yaml.safe_dump(clean_config, sort_keys=False))

    manifest.setdefault("dataset_version", INITIAL_VERSION)
    clean_manifest = redact_json(manifest, known_locations(config))
    redacted[MANIFEST_FILE] = int(clean_manifest != manifest)
    manifest = clean_manifest
    storage.write_text(join(output, MANIFEST_FILE), json.dumps(manifest, indent=2, sort_keys=True))

    stats_md, n = redact_text(storage.read_bytes(join(output, STATS_FILE)).decode())
    redacted[STATS_FILE] = n
    storage.write_text(join(output, STATS_FILE), stats_md)
    for uri in storage.list_files(join(output, "rejects"), "*.parquet"):
        table, n = _redact_table(storage.read_parquet(uri), known_locations(config))
        if n:
            storage.write_parquet(uri, table)
            redacted[_rel(output, uri)] = n

    overrides = {**saved_overrides(output, storage), **(rights or {})}
    sources = rights_summary(output, storage, overrides)
    storage.write_text(join(output, RIGHTS_FILE), json.dumps(sources, indent=2, sort_keys=True))
    write_card(output, storage, manifest["counts"], manifest, stats_md)
    storage.write_text(join(output, DATASHEET_FILE), render_datasheet(clean_config, manifest, sources))
    storage.write_text(join(output, CROISSANT_FILE), json.dumps(croissant(manifest, url), indent=2, ensure_ascii=False))

    files = {}
    for rel in release_scope(output, storage):
        uri = join(output, rel)
        digest, size = file_sha256(storage, uri)
        files[rel] = {"bytes": size, "sha256": digest}
        if rel.endswith(".parquet"):
            with storage.open_input(uri) as f:
                files[rel]["rows"] = pq.ParquetFile(f).metadata.num_rows
    release_manifest = {"format": "fusionrs-release-manifest-v1", "dataset_version": manifest["dataset_version"],
                        "not_released": [d + "/" for d in NOT_RELEASED], "files": files}
    body = json.dumps(release_manifest, indent=2, sort_keys=True).encode()
    storage.write_bytes(join(output, RELEASE_MANIFEST), body)
    lines = [f"{e['sha256']}  {rel}" for rel, e in sorted(files.items())]
    lines.append(f"{hashlib.sha256(body).hexdigest()}  {RELEASE_MANIFEST}")  # last: the manifest's own hash
    storage.write_text(join(output, SHA256SUMS), "\n".join(lines) + "\n")
    return {"files": len(files) + 2, "bytes": sum(e["bytes"] for e in files.values()),
            "dataset_version": manifest["dataset_version"], "redacted": {k: v for k, v in redacted.items() if v},
            "unreviewed_rights": sorted(s for s, e in sources["sources"].items() if UNREVIEWED in e["rights_codes"])}


def release_scope(output: str, storage: Storage) -> list[str]:
    """Relative paths of the files a release holds (and hashes), sorted; the two checksum files
    themselves excepted."""
    out = []
    for uri in storage.list_files(output, "*", recursive=True):
        rel = _rel(output, uri)
        parts = rel.split("/")
        if parts[0] in NOT_RELEASED or any(p.startswith(".") for p in parts) or TMP_MARK in parts[-1]:
            continue
        if rel in (RELEASE_MANIFEST, SHA256SUMS):
            continue
        out.append(rel)
    return sorted(out)


def file_sha256(storage: Storage, uri: str, chunk: int = 8 << 20) -> tuple[str, int]:
    """(sha256 hex, bytes), streamed: image files are large."""
    h, n = hashlib.sha256(), 0
    with storage.open_input_stream(uri) as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
            n += len(b)
    return h.hexdigest(), n


# ---------------------------------------------------------------------------------------
# Croissant 1.0 and the datasheet.

# The Croissant 1.0 JSON-LD context, as mlcroissant writes it for 1.0.
CROISSANT_CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"}, "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/", "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"}, "extract": "cr:extract", "field": "cr:field",
    "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject", "fileSet": "cr:fileSet", "format": "cr:format",
    "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset", "jsonPath": "cr:jsonPath", "key": "cr:key",
    "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path", "recordSet": "cr:recordSet",
    "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated", "replace": "cr:replace",
    "samplingRate": "cr:samplingRate", "sc": "https://schema.org/", "separator": "cr:separator", "source": "cr:source",
    "subField": "cr:subField", "transform": "cr:transform",
}
CITATION = ("@article{han2026fusionrs, title={FusionRS: A Large-Scale RGB--Infrared Remote Sensing Dataset for "
            "Dual-Modal Vision--Language Foundation Models}, author={Han and others}, "
            "journal={arXiv preprint arXiv:2606.17020}, year={2026}}")


def croissant(manifest: dict, url: str = "") -> dict:
    """croissant.json: the triplets and rejects Parquet files as file sets, every column a field."""
    def fields(record_set: str, file_set: str, columns) -> list[dict]:
        out = []
        for c in columns:
            f = {"@type": "cr:Field", "@id": f"{record_set}/{c.name}", "name": c.name, "description": c.doc,
                 "dataType": _croissant_type(c), "source": {"fileSet": {"@id": file_set}, "extract": {"column": c.name}}}
            if pa.types.is_list(c.type):
                f["repeated"] = True
            out.append(f)
        return out

    version = manifest.get("dataset_version", INITIAL_VERSION)
    doc = {
        "@context": CROISSANT_CONTEXT, "@type": "sc:Dataset",
        "name": "fusionrs-rgb-ir-text",
        "description": ("RGB–infrared–text triplets for remote sensing, built with fusionrs. The infrared images are "
                        "synthetic (translated from RGB), not thermal measurements. Per-source upstream rights apply: "
                        f"see {RIGHTS_FILE}."),
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "citeAs": CITATION,
        "license": f"other: per-source upstream rights, {RIGHTS_FILE}",
        "version": version,
        "datePublished": release_date(manifest),
        "distribution": [
            {"@type": "cr:FileSet", "@id": "triplets-files", "name": "triplets-files",
             "description": "triplets/<part>-<split>.parquet", "encodingFormat": "application/x-parquet",
             "includes": "triplets/*.parquet"},
            {"@type": "cr:FileSet", "@id": "rejects-files", "name": "rejects-files",
             "description": "rejects/<part>.parquet: one row per input that is not a triplet",
             "encodingFormat": "application/x-parquet", "includes": "rejects/*.parquet"},
        ],
        "recordSet": [
            {"@type": "cr:RecordSet", "@id": "triplets", "name": "triplets", "key": {"@id": "triplets/sample_id"},
             "description": "One RGB–IR–text triplet per record.",
             "field": fields("triplets", "triplets-files", TRIPLET_COLUMNS)},
            {"@type": "cr:RecordSet", "@id": "rejects", "name": "rejects",
             "description": "Rejected inputs with stage and reason.",
             "field": fields("rejects", "rejects-files", REJECT_COLUMNS)},
        ],
    }
    if url:
        doc["url"] = url
    if manifest.get("changelog"):
        doc["dateModified"] = manifest["changelog"][-1]["date"]
    return doc


def _croissant_type(c) -> str:
    if c.name in IMAGE_COLUMNS:
        return "sc:ImageObject"
    t = c.type.value_type if pa.types.is_list(c.type) else c.type
    return {pa.string(): "sc:Text", pa.int64(): "sc:Integer", pa.bool_(): "sc:Boolean", pa.float64(): "sc:Float",
            pa.binary(): "sc:Text"}[t]


def render_datasheet(config: dict, manifest: dict, rights: dict) -> str:
    """DATASHEET.md: the questions of "Datasheets for Datasets" (Gebru et al., 2021), answered
    from the manifest and the (redacted) config."""
    c = manifest.get("counts", {})
    t2 = c.get("table2_composition", {})
    g = lambda section, key, default="?": (config.get(section) or {}).get(key, default)  # noqa: E731
    comp = "\n".join(f"| {s} | {sum(v.values()):,} | " + " | ".join(f"{v.get(sp, 0):,}" for sp in SPLITS) + " |"
                     for s, v in t2.items())
    reasons = "\n".join(f"| {k} | {v:,} |" for k, v in (c.get("reject_reasons") or {}).items()) or "| (none) | 0 |"
    rights_rows = "\n".join(f"| {s} | " + ", ".join(f"`{k}` ({n:,})" for k, n in e["rights_codes"].items())
                            + f" | {e['note'] or '—'} |" for s, e in rights.get("sources", {}).items())
    sources = ", ".join(f"{s.get('name')} ({s.get('format')})" for s in config.get("sources") or [])
    tr, cap = manifest.get("translator", {}), manifest.get("captioner", {})
    dedup = (manifest.get("plan") or {}).get("dedup", {})
    tombs = manifest.get("tombstones") or []
    version = manifest.get("dataset_version", INITIAL_VERSION)
    return f"""# Datasheet: FusionRS-style RGB–IR–text dataset, version {version}

The questions of "Datasheets for Datasets" (Gebru et al., 2021), answered from `manifest.json`
and `config.yaml` of this release. Items marked *(publisher)* are for whoever publishes it.

## Motivation
- **Purpose.** RGB–infrared–text triplets for dual-modal remote-sensing vision–language models
  (CLIP-style retrieval, VLM captioning), following the FusionRS recipe (arXiv:2606.17020).
- **Creators and funding.** *(publisher)*

## Composition
- **Instances.** One RGB image (JPEG), one synthetic infrared-style image (JPEG) translated from
  it, the cleaned original caption(s) and, for a subset, an IR-aware caption. {c.get('triplets', 0):,}
  triplets; {c.get('rejects', 0):,} rejected inputs are listed in `rejects/` with their reason.
- **Per source and split.**

| source | total | train | val | test |
|---|---|---|---|---|
{comp}

- **Labels.** `class_name` where the source has classes; `ir_caption_status` for the IR-aware
  captions (accepted: {(c.get('ir_caption_status') or {}).get('accepted', 0):,} rows).
- **Splits.** Whole joint groups (RGB and IR pHash64 within Hamming {g('dedup', 'near_radius')}, exact
  SHA-256, equal normalized captions) go to one split; seed {g('split', 'seed')}; groups crossing splits:
  {c.get('cross_split_groups_in_output', '?')}. Joint groups at build time: {dedup.get('groups', '?')}, of which
  {dedup.get('multi_sample_groups', '?')} have more than one member.
- **Noise and limits.** The infrared modality is synthetic: translator `{tr.get('backend', '?')}`
  ({tr.get('version', '')}); it is not a physical temperature measurement. Caption fallbacks and
  statuses: {json.dumps(c.get('caption_status', {}), sort_keys=True)}.
- **Self-contained?** The images are stored here; their upstream terms still apply (Distribution).
- **Sensitive content.** Overhead imagery at the sources' resolutions; captions of web-sourced
  sets (RS5M) are alt-text and were cleaned (stock-photo, copyright, map-source text removed), not
  reviewed by hand. *(publisher: note any review done)*

## Collection process
- **Sources.** {sources}; read from the operator's copies (locations redacted in `config.yaml`).
- **When.** Built {release_date(manifest)} by fusionrs {manifest.get('fusionrs_version', '?')}.

## Preprocessing, cleaning, labelling
- **Images.** Decoded and validated; longest side ≤ {g('ingest', 'max_side')} px, JPEG quality
  {g('ingest', 'jpeg_quality')}, grayscale sources: {g('ingest', 'grayscale')}.
- **Captions.** {g('clean', 'min_words')}–{g('clean', 'max_words')} words, English (langid ≥
  {g('clean', 'language_min_prob')}), boilerplate removed, class-name fallback `{g('clean', 'fallback_template')}`.
- **Translation.** `{tr.get('backend', '?')}` at {tr.get('resolution', g('translate', 'resolution'))} px.
- **IR-aware captions.** `{cap.get('backend', '?')}` ({cap.get('version', cap.get('model', ''))}); filter:
  {g('ir_filter', 'min_words')}–{g('ir_filter', 'max_words')} words, ≥ {g('ir_filter', 'min_cue_terms')} IR-cue terms,
  strict-v3 categories.
- **Rejects by stage and reason.**

| stage:reason | rows |
|---|---|
{reasons}

## Uses
- **Intended.** Training and evaluating RGB/IR/text models; evaluate on `is_eval_representative`
  rows of val and test (one per joint group).
- **Not intended.** Physical thermal analysis (the IR is synthetic); any use the upstream terms
  forbid.

## Distribution
- **Licence.** `other`: each source keeps its upstream terms (rights codes of the official FusionRS
  public index; per-source counts in `{RIGHTS_FILE}`):

| source | rights code (rows) | upstream note |
|---|---|---|
{rights_rows}

- **Integrity.** `SHA256SUMS` (`sha256sum -c SHA256SUMS`), `RELEASE_MANIFEST.json`; metadata in
  `croissant.json` (Croissant 1.0).

## Maintenance
- **Versions.** This is version {version}; takedowns bump it
  (`manifest.json` `changelog`).
- **Takedowns.** Requests name a `sample_id`; removed rows ({len(tombs)} so far) are listed in
  `{TOMBSTONES_FILE}`. Contact: *(publisher)*
"""


# ---------------------------------------------------------------------------------------
# Tombstones (written by build/tombstone.py; read here too, by the verifier).


def read_tombstones(output: str, storage: Storage | None = None) -> dict:
    """tombstones.json, or an empty record when there is none."""
    storage = storage or Storage.from_env()
    uri = join(output, TOMBSTONES_FILE)
    if not storage.exists(uri):
        return {"format": "fusionrs-tombstones-v1", "dataset_version": INITIAL_VERSION, "tombstones": [], "changelog": []}
    return _read_json(storage, uri)


def tombstoned_ids(output: str, storage: Storage | None = None) -> set[str]:
    """The sample_ids taken down from this output: the build's writer must keep them out."""
    return {t["sample_id"] for t in read_tombstones(output, storage)["tombstones"]}


def tombstone_manifest_fields(output: str, storage: Storage | None = None) -> dict:
    """What a rebuild into an output with takedowns carries into its manifest.json
    (`dataset_version`, `tombstones`, `changelog`); {} when nothing was taken down."""
    record = read_tombstones(output, storage)
    if not record["tombstones"]:
        return {}
    return {k: record[k] for k in ("dataset_version", "tombstones", "changelog")}


# ---------------------------------------------------------------------------------------
# The verifier.


def verify(output: str, storage: Storage | None = None) -> list[Problem]:
    """Every problem of a release folder, [] when fine: checksums, row counts against the
    manifest, schemas, split files, leakage (groups and caption keys across splits), machine
    paths in any text file or Parquet string column, tombstoned rows still present, rights."""
    storage = storage or Storage.from_env()
    problems: list[Problem] = []
    scope = release_scope(output, storage)
    _check_hashes(output, storage, scope, problems)
    manifest = _json_or_problem(storage, output, MANIFEST_FILE, problems)
    if manifest.get("status") != COMPLETED:
        problems.append(Problem("not_completed", MANIFEST_FILE, f"status {manifest.get('status')!r}"))
    rows = _check_parquet(output, storage, scope, problems)
    _check_counts(manifest, rows, problems)
    _check_leakage(rows, problems)
    for rel in scope:
        if rel.endswith(TEXT_SUFFIXES):
            text = storage.read_bytes(join(output, rel)).decode("utf-8", errors="replace")
            for i, line in enumerate(text.splitlines(), 1):
                m = MACHINE_PATH_RE.search(line)
                if m:
                    problems.append(Problem("machine_path", rel, f"line {i}: {line.strip()[:120]!r}"))
    record = _json_or_problem(storage, output, TOMBSTONES_FILE, problems, missing_ok=True)
    gone = {t.get("sample_id") for t in record.get("tombstones", [])}
    gone &= set(rows["triplets"]["sample_id"]) | set(rows["rejects"]["sample_id"])
    if gone:
        problems.append(Problem("tombstoned_row_present", TOMBSTONES_FILE, f"{len(gone)} rows, e.g. {sorted(gone)[:3]}"))
    _check_rights(output, storage, rows, problems)
    return problems


def _check_hashes(output: str, storage: Storage, scope: list[str], problems: list[Problem]) -> None:
    if not storage.exists(join(output, RELEASE_MANIFEST)) or not storage.exists(join(output, SHA256SUMS)):
        problems.append(Problem("not_released", RELEASE_MANIFEST,
                                f"no {RELEASE_MANIFEST} or {SHA256SUMS}: run `fusionrs release OUT`"))
        return
    body = storage.read_bytes(join(output, RELEASE_MANIFEST))
    sums: dict[str, str] = {}
    lines = storage.read_bytes(join(output, SHA256SUMS)).decode("utf-8", errors="replace").splitlines()
    for i, line in enumerate(lines, 1):
        m = re.fullmatch(r"([0-9a-f]{64})  (\S.*)", line)
        if not m:
            problems.append(Problem("bad_sums_line", SHA256SUMS, f"line {i} is not '<sha256>  <path>': {line[:80]!r}"))
            continue
        sums[m.group(2)] = m.group(1)
    if not lines or not lines[-1].endswith(f"  {RELEASE_MANIFEST}"):
        problems.append(Problem("sums_last_line", SHA256SUMS, f"the last line must be {RELEASE_MANIFEST}'s own hash"))
    if sums.get(RELEASE_MANIFEST) != hashlib.sha256(body).hexdigest():
        problems.append(Problem("sha256_mismatch", RELEASE_MANIFEST, "its bytes do not match SHA256SUMS"))
    try:
        files = json.loads(body)["files"]
    except (ValueError, KeyError, TypeError) as e:
        problems.append(Problem("bad_release_manifest", RELEASE_MANIFEST, f"unreadable: {e}"))
        return
    for rel, entry in sorted(files.items()):
        if sums.get(rel) != entry.get("sha256"):
            problems.append(Problem("sums_disagree", rel, f"{SHA256SUMS} and {RELEASE_MANIFEST} give different hashes"))
        uri = join(output, rel)
        if not storage.exists(uri):
            problems.append(Problem("missing_file", rel, f"listed in {RELEASE_MANIFEST}, not in the folder"))
            continue
        digest, size = file_sha256(storage, uri)
        if size != entry.get("bytes"):
            problems.append(Problem("size_mismatch", rel, f"{size} bytes, {RELEASE_MANIFEST} says {entry.get('bytes')}"))
        if digest != entry.get("sha256"):
            problems.append(Problem("sha256_mismatch", rel,
                                    f"sha256 {digest[:16]}…, {RELEASE_MANIFEST} says {str(entry.get('sha256'))[:16]}…"))
    for rel in sorted(set(sums) - set(files) - {RELEASE_MANIFEST}):
        problems.append(Problem("sums_disagree", rel, f"in {SHA256SUMS}, not in {RELEASE_MANIFEST}"))
    for rel in scope:
        if rel not in files:
            problems.append(Problem("unlisted_file", rel, f"not in {RELEASE_MANIFEST}: run `fusionrs release OUT` again"))


_ID_COLUMNS = ("sample_id", "source", "split", "group_id", "normalized_caption_key", "is_eval_representative")


def _check_parquet(output: str, storage: Storage, scope: list[str], problems: list[Problem]) -> dict:
    """Schemas, split files, locators and machine paths of every Parquet file; returns the id
    columns of all triplets and rejects rows (with `file`) for the cross-file checks."""
    rows = {"triplets": defaultdict(list), "rejects": defaultdict(list)}
    for rel in scope:
        table_kind = rel.split("/", 1)[0]
        if table_kind not in rows or not rel.endswith(".parquet"):
            continue
        expected = TRIPLET_SCHEMA if table_kind == "triplets" else REJECT_SCHEMA
        try:
            with storage.open_input(join(output, rel)) as f:
                schema = pq.read_schema(f).remove_metadata()
            t = _read_checked(storage, join(output, rel), expected, schema)
        except (OSError, pa.ArrowException) as e:
            problems.append(Problem("unreadable_parquet", rel, f"{type(e).__name__}: {str(e)[:160]}"))
            continue
        if not schema.equals(expected):
            diff = sorted(set(map(str, expected)) ^ set(map(str, schema)))
            problems.append(Problem("schema_mismatch", rel, f"differs from the {table_kind} schema in {diff[:4]}"))
        text_cols = [n for n in t.column_names if pa.types.is_string(t.schema.field(n).type)
                     or pa.types.is_list(t.schema.field(n).type)]
        for name in text_cols:
            col = t.column(name)
            flat = pc.list_flatten(col) if pa.types.is_list(col.type) else col
            hits = pc.filter(flat, pc.fill_null(pc.match_substring_regex(flat, MACHINE_PATH), False))
            if len(hits):
                problems.append(Problem("machine_path", rel,
                                        f"column {name}: {len(hits)} values, e.g. {hits[0].as_py()[:120]!r}"))
        for name in ("source_locator", "source_record_id") if table_kind == "triplets" else ():
            values = [v for v in t.column(name).to_pylist() if v]
            bad = [v for v in values if ABSOLUTE_LOCATOR.search(v)]
            if bad:
                problems.append(Problem("absolute_locator", rel,
                                        f"column {name}: {len(bad)} absolute, e.g. {bad[0][:120]!r}"))
            up = [v for v in values if PARENT_SEGMENT.search(v)]
            if up:
                problems.append(Problem("parent_segment_locator", rel,
                                        f"column {name}: {len(up)} with '..', e.g. {up[0][:120]!r}"))
        if table_kind == "triplets" and "split" in t.column_names:
            declared = split_of_file(rel)
            splits = Counter(t.column("split").to_pylist())
            if declared is None:
                problems.append(Problem("file_without_split", rel, "triplets files are named <part>-<split>.parquet"))
            elif set(splits) - {declared}:
                problems.append(Problem("split_file_mismatch", rel, f"rows of {dict(splits)} in a {declared} file"))
        for c in _ID_COLUMNS:  # a column a bad file lacks reads as nulls, so the lists stay aligned
            rows[table_kind][c] += t.column(c).to_pylist() if c in t.column_names else [None] * t.num_rows
        rows[table_kind]["file"] += [rel] * t.num_rows
    return rows


def _read_checked(storage: Storage, uri: str, expected: pa.Schema, schema: pa.Schema) -> pa.Table:
    """The id and text columns the checks need (those the file has, with their expected type),
    read whole: a corrupt page fails here, not later."""
    keep = [n for n in expected.names if n in schema.names and schema.field(n).type == expected.field(n).type
            and (n in _ID_COLUMNS or pa.types.is_string(expected.field(n).type) or pa.types.is_list(expected.field(n).type))]
    return storage.read_parquet(uri, columns=keep)


def _check_counts(manifest: dict, rows: dict, problems: list[Problem]) -> None:
    counts = manifest.get("counts") or {}
    tri, rej = rows["triplets"], rows["rejects"]
    for key, actual in (("triplets", len(tri["file"])), ("rejects", len(rej["file"]))):
        if counts.get(key) != actual:
            problems.append(Problem("row_count_mismatch", MANIFEST_FILE,
                                    f"counts.{key} is {counts.get(key)}, the files hold {actual}"))
    actual_t2: dict[str, Counter] = defaultdict(Counter)
    for src, sp in zip(tri["source"], tri["split"]):
        actual_t2[src][sp] += 1
    t2 = counts.get("table2_composition") or {}
    for src in sorted(set(t2) | set(actual_t2)):
        for sp in SPLITS:
            want, got = (t2.get(src) or {}).get(sp, 0), actual_t2[src][sp]
            if want != got:
                problems.append(Problem("row_count_mismatch", MANIFEST_FILE,
                                        f"table2_composition.{src}.{sp} is {want}, the files hold {got}"))


def _check_leakage(rows: dict, problems: list[Problem]) -> None:
    tri = rows["triplets"]
    bad_split = sorted({s for s in tri["split"] if s not in SPLITS})
    if bad_split:
        problems.append(Problem("unknown_split", "triplets/", f"split values {bad_split}"))
    dup = [k for k, n in Counter(tri["sample_id"]).items() if n > 1]
    if dup:
        problems.append(Problem("duplicate_sample_id", "triplets/", f"{len(dup)} ids, e.g. {sorted(dup)[:3]}"))
    for col, code in (("group_id", "cross_split_group"), ("normalized_caption_key", "caption_key_across_splits")):
        seen: dict[str, dict[str, str]] = defaultdict(dict)  # value → split → a file holding it
        for v, sp, f in zip(tri[col], tri["split"], tri["file"]):
            if v is not None:
                seen[v].setdefault(sp, f)
        crossing = sorted(v for v, by in seen.items() if len(by) > 1)
        if crossing:
            v = crossing[0]
            files = ", ".join(f"{sp}: {f}" for sp, f in sorted(seen[v].items()))
            problems.append(Problem(code, seen[v][min(seen[v])], f"{len(crossing)} values in more than one split, "
                                                                  f"e.g. {v[:24]} ({files})"))
    trained = [f for sp, e, f in zip(tri["split"], tri["is_eval_representative"], tri["file"]) if sp == "train" and e]
    if trained:
        problems.append(Problem("eval_representative_in_train", trained[0], f"{len(trained)} train rows flagged"))


def _check_rights(output: str, storage: Storage, rows: dict, problems: list[Problem]) -> None:
    sources = _json_or_problem(storage, output, RIGHTS_FILE, problems).get("sources", {})
    actual = Counter(rows["triplets"]["source"])
    for src in sorted(set(sources) | set(actual)):
        e = sources.get(src) or {}
        if e.get("rows", 0) != actual[src]:
            problems.append(Problem("rights_rows_mismatch", RIGHTS_FILE,
                                    f"{src}: {e.get('rows', 0)} rows listed, {actual[src]} in triplets"))
        if UNREVIEWED in (e.get("rights_codes") or {}):
            subs = f" (SkyScript subsources {e.get('subsources')})" if e.get("subsources") else ""
            problems.append(Problem("rights_unknown", RIGHTS_FILE,
                                    f"{src}: {e['rights_codes'][UNREVIEWED]} rows have no rights code{subs}; "
                                    f"pass write_release(rights={{'{src}': CODE}})"))


def _json_or_problem(storage: Storage, output: str, rel: str, problems: list[Problem], missing_ok: bool = False) -> dict:
    uri = join(output, rel)
    if not storage.exists(uri):
        if not missing_ok:
            problems.append(Problem("missing_file", rel, "run `fusionrs release OUT`"))
        return {}
    try:
        value = _read_json(storage, uri)
    except ValueError as e:
        problems.append(Problem("unreadable_json", rel, str(e)[:160]))
        return {}
    if not isinstance(value, dict):
        problems.append(Problem("unreadable_json", rel, "not a JSON object"))
        return {}
    return value


def _read_json(storage: Storage, uri: str) -> dict:
    return json.loads(storage.read_bytes(uri))


def _rel(output: str, uri: str) -> str:
    base = output.rstrip("/")
    rel = uri[len(base):].lstrip("/") if uri.startswith(base) else uri
    return rel.replace("\\", "/")
