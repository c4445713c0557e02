"""Takedowns: remove rows from a built (and usually released) dataset and leave a tombstone.

    from fusionrs.build.tombstone import tombstone, tombstoned_ids
    tombstone("out/demo/build", ["RSICD-52cd5410d3301c4c"], "rights holder request")
    tombstone("out/demo/build", ["NWPU-710625351e2067e0"], "privacy", whole_groups=True)

A takedown removes the named rows (with `whole_groups`, every member of their joint groups) from
triplets/ and rejects/, keeps every other row byte for byte and in its split, records each
removal with date and reason in tombstones.json and manifest.json (`tombstones`, `changelog`),
bumps `dataset_version`, and writes the reports, the card and the release files again. The
version bump follows the official takedown policy (reference §11): a new major version when the
membership of a joint group changes (a member removed, others kept: group-level results and
`group_size` no longer describe the data), else a new minor version.

tombstones.json is written first, so an interrupted takedown is finished by running it again,
and a rebuild into the same output keeps the rows out (the build's writer reads
`tombstoned_ids`). The build's working state (_stage/, _cache/) is not released and still holds
the rows: delete it too when the takedown must erase every copy. An HTML report in the output
(report.html) shows rows' pictures: it is deleted, to be written again by `fusionrs report`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from fusionrs.build.report import write_reports
from fusionrs.config.build import BuildConfig
from fusionrs.config.loader import from_dict
from fusionrs.core.storage import Storage, join
from fusionrs.dataset.card import CONFIG_FILE, INITIAL_VERSION, triplet_files
from fusionrs.dataset.layout import REPORT_FILE, Layout
from fusionrs.dataset.release import (
    COMPLETED,
    MACHINE_PATH_RE,
    MANIFEST_FILE,
    TOMBSTONES_FILE,
    read_tombstones,
    tombstoned_ids,
    write_release,
)

__all__ = ["TombstoneError", "tombstone", "tombstoned_ids"]  # tombstoned_ids lives in release.py (the verifier reads it too)

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class TombstoneError(ValueError):
    """A takedown that cannot be done; `code` says why."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code


def tombstone(output: str, sample_ids, reason: str, whole_groups: bool = False, storage: Storage | None = None,
              date: str | None = None) -> dict:
    """Take down `sample_ids` (and, with `whole_groups`, their joint groups). `reason` is public
    (it is written to the release): one line, no personal data. `date`: YYYY-MM-DD, default today
    (UTC). Returns {removed, rejects_removed, already_tombstoned, dataset_version, membership_changed}."""
    storage = storage or Storage.from_env()
    ids = {str(s) for s in sample_ids}
    _check_request(ids, reason, date)
    date = date or datetime.now(timezone.utc).date().isoformat()
    manifest = json.loads(storage.read_bytes(join(output, MANIFEST_FILE)))
    if manifest.get("status") != COMPLETED:
        raise TombstoneError("not_completed", f"{MANIFEST_FILE} status is {manifest.get('status')!r}")
    layout = Layout(output)
    tri_files = triplet_files(output, storage)
    rej_files = storage.list_files(layout.rejects(), "*.parquet")
    # Id columns only, as Arrow (a few bytes a row, whatever the dataset's size).
    index = _index(storage, tri_files, ["sample_id", "source", "split", "group_id"])
    rej_index = _index(storage, rej_files, ["sample_id", "source"])
    record = read_tombstones(output, storage)
    done = {t["sample_id"] for t in record["tombstones"]}
    present = set(_rows_in(index, "sample_id", ids)["sample_id"].to_pylist()) | \
        set(_rows_in(rej_index, "sample_id", ids)["sample_id"].to_pylist())
    unknown = ids - present - done
    if unknown:
        raise TombstoneError("unknown_sample_id",
                             f"{len(unknown)} ids are in neither triplets nor rejects: {sorted(unknown)[:5]}")

    new = ids - done
    requested = set(new)
    if whole_groups:
        groups = set(_rows_in(index, "sample_id", new)["group_id"].to_pylist())
        new |= set(_rows_in(index, "group_id", groups)["sample_id"].to_pylist())
    by_id = {r["sample_id"]: r for r in _rows_in(index, "sample_id", new).to_pylist()}
    removed_groups = {r["group_id"] for r in by_id.values()}
    membership_changed = bool(set(_rows_in(index, "group_id", removed_groups)["sample_id"].to_pylist()) - new)

    # tombstones.json is written before manifest.json: after an interrupted takedown it is ahead.
    version = record["dataset_version"] = max(manifest.get("dataset_version", INITIAL_VERSION), record["dataset_version"],
                                              key=_semver)
    if new:
        version = record["dataset_version"] = bump(version, major=membership_changed)
        rej_by_id = {r["sample_id"]: r for r in _rows_in(rej_index, "sample_id", new).to_pylist()}
        for sid in sorted(new):
            r = by_id.get(sid) or rej_by_id[sid]
            record["tombstones"].append({
                "sample_id": sid, "source": r["source"], "split": r.get("split"), "group_id": r.get("group_id"),
                "date": date, "reason": reason, "version": version, "requested": sid in requested})
        record["changelog"].append({
            "version": version, "date": date, "reason": reason,
            "change": f"takedown of {len(new)} rows ({len(requested)} requested"
                      f"{', whole joint groups' if whole_groups else ''}): {reason}",
            "component_membership_changed": membership_changed})
        # First, so that an interrupted takedown is completed by a rerun and a rebuild keeps them out.
        storage.write_text(join(output, TOMBSTONES_FILE), json.dumps(record, indent=2, sort_keys=True))

    # Every tombstoned id, not only the new ones: a rerun finishes what an interrupted one began.
    gone = done | new
    removed = _remove(storage, tri_files, gone)
    rejects_removed = _remove(storage, rej_files, gone)
    # The HTML report shows rows' pictures and captions: it goes, `fusionrs report` writes a new one.
    if storage.exists(join(output, REPORT_FILE)):
        storage.delete(join(output, REPORT_FILE))

    manifest.update(dataset_version=version, tombstones=record["tombstones"], changelog=record["changelog"])
    config = yaml.safe_load(storage.read_bytes(join(output, CONFIG_FILE))) or {}
    # write_reports needs the output and (through the card) config.yaml: the redacted config serves.
    cfg = from_dict(BuildConfig, {**config, "output": output})
    manifest.update(write_reports(cfg, storage, layout, manifest))
    storage.write_text(join(output, MANIFEST_FILE), json.dumps(manifest, indent=2, sort_keys=True))
    write_release(output, storage)
    return {"removed": removed, "rejects_removed": rejects_removed, "already_tombstoned": sorted(ids & done),
            "dataset_version": version, "membership_changed": membership_changed}


def bump(version: str, major: bool) -> str:
    """Semantic version bump: major (X+1.0.0) or minor (X.Y+1.0)."""
    x, y, _ = _semver(version)
    return f"{x + 1}.0.0" if major else f"{x}.{y + 1}.0"


def _semver(version: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version or "")
    if not m:
        raise TombstoneError("bad_version", f"dataset_version {version!r} is not MAJOR.MINOR.PATCH")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def _check_request(ids: set[str], reason: str, date: str | None) -> None:
    if not ids:
        raise TombstoneError("no_sample_ids", "name at least one sample_id")
    if not reason or not reason.strip():
        raise TombstoneError("empty_reason", "a takedown needs a reason (it is published in tombstones.json)")
    if "\n" in reason or len(reason) > 300:
        raise TombstoneError("bad_reason", "the reason is one line of at most 300 characters")
    if MACHINE_PATH_RE.search(reason):
        raise TombstoneError("bad_reason", "the reason holds a machine path; it is published")
    if date is not None and not _DATE.match(date):
        raise TombstoneError("bad_date", f"date {date!r} is not YYYY-MM-DD")


def _index(storage: Storage, files: list[str], columns: list[str]) -> pa.Table:
    tables = [storage.read_parquet(uri, columns=columns) for uri in files]
    return pa.concat_tables(tables) if tables else pa.table({c: pa.array([], pa.string()) for c in columns})


def _rows_in(table: pa.Table, column: str, values: set) -> pa.Table:
    """The rows whose `column` is one of `values`."""
    value_set = pa.array(sorted(v for v in values if v is not None), pa.string())
    return table.filter(pc.fill_null(pc.is_in(table.column(column), value_set=value_set), False))


def _remove(storage: Storage, files: list[str], gone: set[str]) -> int:
    """Drop the rows of `gone` from each file; a file left empty is deleted (the build never
    writes empty files). Files without such rows are not rewritten."""
    n = 0
    ids = pa.array(sorted(gone), pa.string())
    for uri in files:
        table = storage.read_parquet(uri)
        hit = pc.fill_null(pc.is_in(table.column("sample_id"), value_set=ids), False)
        k = pc.sum(hit).as_py() or 0
        if not k:
            continue
        n += k
        kept = table.filter(pc.invert(hit))
        if kept.num_rows:
            storage.write_parquet(uri, kept)
        else:
            storage.delete(uri)
    return n
