"""A small but real build output folder, written without Ray: what the release tests run on.

The triplets are written in the per-split layout (`triplets/<part>-<split>.parquet`, one part
per source) with TRIPLET_SCHEMA and real JPEGs; rejects with REJECT_SCHEMA; config.yaml is a
real BuildConfig's dump (its source roots absolute, as the build writes them); stats.md,
README.md and the manifest's counts come from the build's own write_reports, as at the end of
a build. The manifest also carries the source roots (absolute machine paths) so that the
release's redaction has something to do.

Per source: 8 rows — train: a 2-member joint group (same caption key) and 2 singletons; val and
test: 2 singletons each (each its group's evaluation representative). IR-aware captions are
accepted for the first train row and both test rows. One reject per source; the first source's
reject detail names a machine path (as a decoder message can).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from PIL import Image

from fusionrs.build.report import write_reports
from fusionrs.config import load_config, to_yaml
from fusionrs.core.storage import Storage
from fusionrs.dataset.layout import Layout, triplet_file_name
from fusionrs.dataset.schema import (
    CAPTION_ORIGINAL,
    IR_CAPTION_ACCEPTED,
    IR_CAPTION_NOT_SELECTED,
    IR_OK,
    REJECT_SCHEMA,
    SPLITS,
    STAGE_INGEST,
    TRIPLET_SCHEMA,
)

DEFAULT_SOURCES = (("RSICD", "karpathy_json"), ("SkyScript", "skyscript_csv"), ("NWPU", "nwpu"))
ANNOTATIONS = {"karpathy_json": "dataset.json", "skyscript_csv": "skyscript.csv", "nwpu": "dataset_nwpu.json"}
# (split, group index within the source, accepted IR-aware caption?)
PLAN = [("train", 0, True), ("train", 0, False), ("train", 1, False), ("train", 2, False),
        ("val", 3, False), ("val", 4, False), ("test", 5, True), ("test", 6, True)]


@dataclass
class Build:
    out: Path
    src_root: Path
    rows: list[dict]  # every triplet row written
    rejects: list[dict]
    files: dict[str, list[str]]  # triplets file (relative) → its sample_ids in order


def _sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def _jpeg(seed: int, gray: bool = False) -> bytes:
    """A 24×24 picture with a gradient and a block, different for every seed."""
    img = Image.new("RGB", (24, 24))
    px = img.load()
    for y in range(24):
        for x in range(24):
            px[x, y] = ((seed * 37 + x * 9) % 256, (seed * 91 + y * 7) % 256, (seed * 53 + (x ^ y) * 5) % 256)
    img.paste((255 - seed * 11 % 256, 40, 200), (4 + seed % 8, 4, 12 + seed % 8, 12))
    if gray:
        img = img.convert("L").convert("RGB")  # IR-style: grey-looking, PIL RGB mode
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _locator(name: str, fmt: str, i: int) -> tuple[str, str]:
    """(source_record_id, source_locator) shaped like the real readers' ids."""
    if fmt == "nwpu":
        rid = f"airport/airport_{i:03d}.jpg"
        return rid, f"NWPU_images/{rid}"
    if fmt == "skyscript_csv":
        sub = "DE" if i in (2, 5) else "US"  # two SkyScript subsources
        rid = f"images/img_{i:06d}_{sub}_.jpg"
        return rid, rid
    rid = f"{name.lower()}_{i:05d}.jpg"
    return rid, rid


def write_build(base: Path, sources=DEFAULT_SOURCES) -> Build:
    out, src_root = base / "build", base / "sources"
    srcs = ", ".join(f"{{name: {n}, format: {f}, root: {src_root / n}, annotations: {ANNOTATIONS[f]}}}" for n, f in sources)
    cfg = load_config(None, [f"output={out}", f"sources=[{srcs}]"])
    storage, layout = Storage(), Layout(str(out))
    rows, rejects, files = [], [], {}
    for s_i, (name, fmt) in enumerate(sources):
        part_rows = []
        ids = {}
        for i in range(len(PLAN)):
            ids[i] = f"{name}-{_sha(_locator(name, fmt, i)[0])[:16]}"
        members: dict[int, list[str]] = {}
        for i, (_, g, _) in enumerate(PLAN):
            members.setdefault(g, []).append(ids[i])
        for i, (split, g, accepted) in enumerate(PLAN):
            rid, loc = _locator(name, fmt, i)
            caption = f"{name} scene {g}: a runway beside {g + 2} hangars and a parking lot"
            seed = s_i * 16 + i
            rgb, ir = _jpeg(seed), _jpeg(seed + 100, gray=True)
            part_rows.append({
                "sample_id": ids[i], "source": name, "source_record_id": rid, "source_locator": loc, "split": split,
                "group_id": "group-" + _sha("\n".join(sorted(members[g])))[:20], "group_size": len(members[g]),
                "is_eval_representative": split != "train", "class_name": "airport" if fmt == "nwpu" else None,
                "caption": caption, "captions": [caption], "caption_status": CAPTION_ORIGINAL,
                "normalized_caption_key": _sha(caption.lower()),
                "rgb_jpeg": rgb, "rgb_sha256": hashlib.sha256(rgb).hexdigest(),
                "rgb_phash": f"{seed:016x}", "image_note": None, "ir_jpeg": ir, "ir_status": IR_OK,
                "ir_sha256": hashlib.sha256(ir).hexdigest(), "ir_phash": f"{seed + 100:016x}",
                "ir_aware_caption": (f"bright runway strips and dark grass with sharp outlines in scene {g}"
                                     if accepted else None),
                "ir_caption_status": IR_CAPTION_ACCEPTED if accepted else IR_CAPTION_NOT_SELECTED,
                "ir_caption_cost_usd": 0.0,
            })
        part = f"{name}-00000"
        for split in SPLITS:
            chunk = [r for r in part_rows if r["split"] == split]
            rel = f"triplets/{triplet_file_name(part, split)}"
            storage.write_parquet(str(out / rel), pa.Table.from_pylist(chunk, schema=TRIPLET_SCHEMA))
            files[rel] = [r["sample_id"] for r in chunk]
        rows += part_rows
        detail = f"cannot identify image file {src_root / name / 'broken.jpg'}" if s_i == 0 else "cannot identify image file"
        rej = [{"sample_id": f"{name}-{_sha('broken')[:16]}", "source": name, "source_record_id": "broken.jpg",
                "source_locator": "broken.jpg", "stage": STAGE_INGEST, "reason": "not_an_image", "detail": detail,
                "caption_status": CAPTION_ORIGINAL, "raw_captions": ["a broken picture of a runway"]}]
        storage.write_parquet(layout.rejects(part), pa.Table.from_pylist(rej, schema=REJECT_SCHEMA))
        rejects += rej
    # The build's working state: present in every real output, never released.
    storage.write_text(str(out / "_stage" / "ingest" / "fp" / "x.done.json"), "[]")
    storage.write_text(str(out / "ledger" / "run.json"), "{}")
    storage.write_text(layout.file("config.yaml"), to_yaml(cfg))
    manifest = {
        "fusionrs_version": "0.2.0", "status": "completed", "run_id": "20261130T000000Z-abcdef",
        "config_fingerprint": cfg.fingerprint(), "stage_fingerprints": {"ingest": "a" * 16},
        "translator": {"backend": "pseudo_ir", "version": "pseudo_ir-1", "resolution": 24, "jpeg_quality": 90},
        "captioner": {"backend": "cues", "version": "cues-1"}, "packages": {"pyarrow": pa.__version__},
        "source_roots": {s.name: s.root for s in cfg.sources}, "units": len(sources), "parts": len(sources),
        "pending_parts": [], "created_unix": 1796000000,
        "plan": {"dedup": {"groups": 7 * len(sources), "multi_sample_groups": len(sources)}, "cross_split_groups": 0},
    }
    manifest.update(write_reports(cfg, storage, layout, manifest))
    storage.write_text(layout.file("manifest.json"), json.dumps(manifest, indent=2, sort_keys=True))
    return Build(out=out, src_root=src_root, rows=rows, rejects=rejects, files=files)
