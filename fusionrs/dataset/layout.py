"""Where everything lives under a build's output URI (docs/pipeline.md).

    triplets/<part>-<split>.parquet                      the dataset (dataset/schema.py), one file per split
    rejects/<part>.parquet                               one row per input that is not a triplet
    manifest.json stats.md README.md config.yaml         what was built, and how
    ledger/<run>.json                                    what each run cost
    logs/ray.log                                         Ray's own INFO lines (the console shows progress)
    report.html                                          `fusionrs report`: build, curves, evaluation, cost (not released)
    _stage/<stage>/<fingerprint>/<part>...               per-stage shard files: what a rerun reuses
    _cache/captions/seg-*.jsonl                          every paid API response
"""

from __future__ import annotations

from dataclasses import dataclass

from fusionrs.core.storage import join
from fusionrs.dataset.schema import SPLITS

# Suffix of the temporary files an interrupted atomic write can leave (core.storage).
TMP_MARK = ".tmp-"
REPORT_FILE = "report.html"  # written by fusionrs/report_html.py; never released


@dataclass(frozen=True)
class Layout:
    output: str

    def ingest(self, fp: str, part: str = "") -> str:
        return join(self.output, "_stage", "ingest", fp, f"{part}.parquet" if part else "")

    def ingest_marker(self, fp: str, unit: str) -> str:
        """JSON list of a unit's parts, written last: the unit's commit."""
        return join(self.output, "_stage", "ingest", fp, f"{unit}.done.json")

    def ir(self, fp: str, part: str) -> str:
        return join(self.output, "_stage", "ir", fp, f"{part}.parquet")

    def caption(self, fp: str, part: str, selection: str) -> str:
        return join(self.output, "_stage", "caption", fp, f"{part}-{selection}.parquet")

    def triplets(self, part: str = "", split: str = "") -> str:
        """triplets/ or one part's file of one split: `datasets.load_dataset(OUT)` and any reader
        of `triplets/*.parquet` see the same files (one glob per split, the split also a column)."""
        return join(self.output, "triplets", triplet_file_name(part, split) if part else "")

    def rejects(self, part: str = "") -> str:
        return join(self.output, "rejects", f"{part}.parquet" if part else "")

    def caption_cache(self) -> str:
        return join(self.output, "_cache", "captions")

    def ledger(self, run_id: str = "") -> str:
        return join(self.output, "ledger", f"{run_id}.json" if run_id else "")

    def own_dirs(self) -> list[str]:
        """The folders the build writes (and so the only ones its temp-file sweep may touch)."""
        return [join(self.output, d) for d in ("_stage", "_cache", "triplets", "rejects", "ledger")]

    def file(self, name: str) -> str:
        return join(self.output, name)


def triplet_file_name(part: str, split: str) -> str:
    return f"{part}-{split}.parquet"


def split_glob(split: str) -> str:
    """The files of one split, relative to the output: what the card's `data_files` list."""
    return f"triplets/*-{split}.parquet"


def split_of_file(name: str) -> str | None:
    """The split a triplets file name declares (`RSICD.0a1b-val.parquet` → `val`), else None."""
    stem = name.rsplit("/", 1)[-1].removesuffix(".parquet")
    split = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    return split if split in SPLITS else None
