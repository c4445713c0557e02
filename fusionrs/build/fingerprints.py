"""Stage fingerprints: what determines each stage's files (docs/pipeline.md, "Fingerprints").

A fingerprint is a pure function of the resolved config, the stage code versions and, for
ingest, the inputs' own identities (annotation bytes, tar sizes and mtimes / ETags). It never
depends on the machine that computes it: a driver on a CPU head and one on a GPU node agree,
so a rerun from either reuses the same work.
"""

from __future__ import annotations

import dataclasses

from fusionrs.build.stages import captioner_identity, translator_identity
from fusionrs.config.build import BuildConfig
from fusionrs.config.loader import stable_hash
from fusionrs.core.storage import Storage

# Bump when a stage's code changes what it writes: part of that stage's fingerprint.
INGEST_CODE_VERSION = "ingest-2"  # exif orientation, hostile-locator rejects, control-character stripping
TRANSLATE_CODE_VERSION = "translate-2"  # IR SHA-256 and pHash stored beside each IR image
CAPTION_CODE_VERSION = "caption-1"


def ingest_fingerprint(cfg: BuildConfig) -> str:
    """Config only: each unit's inputs are fingerprinted per unit (readers: WorkUnit.input_id)."""
    return stable_hash({"code": INGEST_CODE_VERSION, "ingest": dataclasses.asdict(cfg.ingest),
                        "clean": dataclasses.asdict(cfg.clean),
                        "sources": [dataclasses.asdict(s) for s in cfg.sources]})


def translate_fingerprint(cfg: BuildConfig, ingest_fp: str, storage: Storage) -> str:
    return stable_hash({"code": TRANSLATE_CODE_VERSION, "ingest": ingest_fp,
                        "translator": translator_identity(cfg, storage)})


def caption_fingerprint(cfg: BuildConfig, translate_fp: str) -> str:
    return stable_hash({"code": CAPTION_CODE_VERSION, "ir": translate_fp, "captioner": captioner_identity(cfg)})


def stage_fingerprints(cfg: BuildConfig, storage: Storage) -> dict[str, str]:
    fps = {"ingest": ingest_fingerprint(cfg)}
    fps["translate"] = translate_fingerprint(cfg, fps["ingest"], storage)
    fps["caption"] = caption_fingerprint(cfg, fps["translate"])
    return fps
