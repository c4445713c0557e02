"""The dataset card: `README.md` with Hugging Face YAML front matter, an RGB | IR grid
(`assets/grid.png`) and the per-source rights table (docs/release.md).

    from datasets import load_dataset
    ds = load_dataset("out/demo/build")                  # DatasetDict train / val / test, images as PIL
    ds = load_dataset("out/demo/build", "iraware")       # only rows with an accepted IR-aware caption

The build writes the card (build/report.py calls `write_card`); `fusionrs release` and takedowns
(dataset/release.py, build/tombstone.py) write it again from the output folder alone, so the card
always describes the files beside it. The front matter is what makes the folder load with
`datasets.load_dataset`: one config whose data files are the per-split triplet files, and
features that declare the JPEG columns as `image` (a binary Parquet column is cast to the Image
feature by `datasets`; without the declaration it stays bytes).
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter, defaultdict
from datetime import datetime, timezone

import pyarrow as pa
import yaml
from PIL import Image, ImageOps

from fusionrs.core.storage import Storage, join
from fusionrs.dataset.layout import Layout, split_glob
from fusionrs.dataset.schema import IR_CAPTION_ACCEPTED, SPLITS, TRIPLET_COLUMNS

# Every binary column of the triplets is a JPEG (dataset/schema.py): these become Image features.
IMAGE_COLUMNS = tuple(c.name for c in TRIPLET_COLUMNS if c.type == pa.binary())

GRID_FILE = "assets/grid.png"
CARD_FILE = "README.md"
CONFIG_FILE = "config.yaml"
INITIAL_VERSION = "1.0.0"  # dataset_version of a build that has had no takedown


# ---------------------------------------------------------------------------------------
# Rights: the official public index's `source_rights_code` table (reference §1.2), keyed by
# our sources' configured names, and its per-source notes (§1.1 `source_rights_note`).

SOURCE_RIGHTS = {
    "RS5M": "rs5m-item-rights-unconfirmed",
    "NWPU": "nwpu-captions-text-unlicensed",
    "RSICD": "rsicd-redistribution-license-not-located",
    "RSITMD": "rsitmd-redistribution-license-not-located",
}
SKYSCRIPT = "SkyScript"
# SkyScript rows take their code from the subsource in the locator. The reference elides the
# common prefix of all but the first code ("…swissimage-source-reference"); it is `skyscript-`,
# as in the one it spells out (`skyscript-naip-public-domain`).
SKYSCRIPT_SUBSOURCE = re.compile(r"_([A-Z0-9]{2})_[^/]*$")
SKYSCRIPT_RIGHTS = {
    "US": "skyscript-naip-public-domain",
    "CH": "skyscript-swissimage-source-reference",
    "DE": "skyscript-brandenburg-dl-de-by-2.0",
    "S2": "skyscript-sentinel-copernicus-notice",
    "FI": "skyscript-finland-nls-cc-by-4.0",
    "ES": "skyscript-pnoa-cc-by-4.0",
    "P3": "skyscript-skysat-rgb-cc-by-4.0",
    "L8": "skyscript-landsat8-public-domain",
    "P5": "skyscript-skysat-multispectral-cc-by-4.0",
    "L9": "skyscript-landsat9-public-domain",
}
SOURCE_NOTES = {
    "NWPU": "CC BY-NC 4.0 upstream; index-only by default",
    "RS5M": "heterogeneous upstream rights; index-only",
    "RSICD": "no uniform redistribution license located; index-only",
    "RSITMD": "no uniform redistribution license located; index-only",
    "SkyScript": "source-specific Earth Engine terms; index-only",
}
# The official builder raises on a source or SkyScript subsource it has no code for. We record
# the rows under this code instead, so the release still describes them, and `verify` fails
# naming the source (write_release(rights=...) supplies a code for a source of your own).
UNREVIEWED = "rights-not-reviewed"
RIGHTS_FILE = "licenses/sources.json"


def rights_code(source: str, locator: str, overrides: dict[str, str] | None = None) -> tuple[str, str]:
    """(rights code, SkyScript subsource or "") of one row."""
    if overrides and source in overrides:
        return overrides[source], ""
    if source == SKYSCRIPT:
        m = SKYSCRIPT_SUBSOURCE.search(locator or "")
        sub = m.group(1) if m else "unknown"
        return SKYSCRIPT_RIGHTS.get(sub, UNREVIEWED), sub
    return SOURCE_RIGHTS.get(source, UNREVIEWED), ""


def rights_summary(output: str, storage: Storage | None = None, overrides: dict[str, str] | None = None) -> dict:
    """licenses/sources.json: per source its rows, rights codes (with row counts), note and
    SkyScript subsource counts, computed from the triplets as written."""
    storage = storage or Storage.from_env()
    per: dict[str, dict] = defaultdict(lambda: {"rows": 0, "rights_codes": Counter(), "subsources": Counter()})
    for uri in triplet_files(output, storage):
        t = storage.read_parquet(uri, columns=["source", "source_locator"])
        for src, loc in zip(t.column("source").to_pylist(), t.column("source_locator").to_pylist()):
            code, sub = rights_code(src, loc, overrides)
            e = per[src]
            e["rows"] += 1
            e["rights_codes"][code] += 1
            if sub:
                e["subsources"][sub] += 1
    sources = {}
    for src in sorted(per):
        e = per[src]
        sources[src] = {"rows": e["rows"], "rights_codes": dict(sorted(e["rights_codes"].items())),
                        "note": SOURCE_NOTES.get(src, ""), "overridden": bool(overrides and src in overrides)}
        if e["subsources"]:
            sources[src]["subsources"] = dict(sorted(e["subsources"].items()))
    return {
        "format": "fusionrs-source-rights-v1",
        "reference": "FusionRS official implementation, public index `source_rights_code` (its §1.2)",
        "unreviewed_code": UNREVIEWED,
        "sources": sources,
    }


def saved_overrides(output: str, storage: Storage) -> dict[str, str]:
    """Rights codes given to `write_release(rights=...)` earlier, as kept in licenses/sources.json
    (so a later release, or a takedown, keeps them)."""
    uri = join(output, RIGHTS_FILE)
    if not storage.exists(uri):
        return {}
    sources = json.loads(storage.read_bytes(uri)).get("sources", {})
    return {src: next(iter(e["rights_codes"])) for src, e in sources.items()
            if e.get("overridden") and e.get("rights_codes")}


def triplet_files(output: str, storage: Storage) -> list[str]:
    return storage.list_files(Layout(output).triplets(), "*.parquet")


# ---------------------------------------------------------------------------------------
# Front matter.


def hf_features() -> list[dict]:
    """`dataset_info.features` in the card's YAML: every triplet column, JPEG columns as images."""
    out = []
    for c in TRIPLET_COLUMNS:
        if c.name in IMAGE_COLUMNS:
            out.append({"name": c.name, "dtype": "image"})
        elif pa.types.is_list(c.type):
            out.append({"name": c.name, "list": _hf_dtype(c.type.value_type)})
        else:
            out.append({"name": c.name, "dtype": _hf_dtype(c.type)})
    return out


def _hf_dtype(t: pa.DataType) -> str:
    names = {pa.string(): "string", pa.int64(): "int64", pa.bool_(): "bool", pa.float64(): "float64", pa.binary(): "binary"}
    if t not in names:
        raise ValueError(f"no Hugging Face dtype for Arrow type {t}: add it to card._hf_dtype")
    return names[t]


def size_category(n: int) -> str:
    """The Hub's size buckets."""
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M")):
        if n < bound:
            return name
    return "10M<n<100M"


def split_rows(table2: dict) -> dict[str, int]:
    return {s: sum(c.get(s, 0) for c in table2.values()) for s in SPLITS}


def front_matter(counts: dict) -> dict:
    """The card's YAML. A split with no rows is left out of `data_files` (a glob that matches no
    file, or a filtered split with no rows, is an error in `datasets`)."""
    per_split = split_rows(counts.get("table2_composition", {}))
    accepted = split_rows(counts.get("table3_iraware_accepted", {}))
    files = [{"split": s, "path": split_glob(s)} for s in SPLITS if per_split[s]]
    configs = [{"config_name": "default", "default": True, "data_files": files}] if files else []
    infos = [{"config_name": "default", "features": hf_features()}] if files else []
    iraware = [{"split": s, "path": split_glob(s)} for s in SPLITS if accepted[s]]
    if iraware:
        configs.append({"config_name": "iraware", "data_files": iraware,
                        "filters": [["ir_caption_status", "==", IR_CAPTION_ACCEPTED]]})
        infos.append({"config_name": "iraware", "features": hf_features()})
    return {
        "pretty_name": "FusionRS-style RGB–IR–text triplets",
        "license": "other",
        "license_name": "per-source-upstream-rights",
        "license_link": RIGHTS_FILE,
        "language": ["en"],
        "task_categories": ["image-to-text", "zero-shot-image-classification", "image-feature-extraction"],
        "tags": ["remote-sensing", "earth-observation", "infrared", "synthetic-infrared", "rgb-infrared",
                 "multimodal", "image-text", "clip"],
        "size_categories": [size_category(int(counts.get("triplets", 0)))],
        **({"configs": configs, "dataset_info": infos} if configs else {}),
    }


# ---------------------------------------------------------------------------------------
# The grid: a few RGB | IR pairs per source, chosen by smallest sample_id (deterministic, and a
# takedown of a shown row changes the choice when the card is written again).


def write_grid(output: str, storage: Storage, per_source: int = 2, thumb: int = 96) -> list[dict]:
    """Write assets/grid.png (one row per source, `per_source` RGB | IR pairs); returns the rows
    shown ({source, sample_id, split}), or [] (and no file) when there are no triplets."""
    files = triplet_files(output, storage)
    # source → its `per_source` smallest (sample_id, file) so far: every file is read (the smallest
    # ids can sit in any file), but only the current picks are kept, not every row's id.
    chosen: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for uri in files:
        t = storage.read_parquet(uri, columns=["source", "sample_id"])
        here: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for src, sid in zip(t.column("source").to_pylist(), t.column("sample_id").to_pylist()):
            here[src].append((sid, uri))
        for src, pairs in here.items():
            chosen[src] = sorted(chosen[src] + pairs)[:per_source]
    want = {sid for picks in chosen.values() for sid, _ in picks}
    images: dict[str, dict] = {}
    for uri in sorted({u for picks in chosen.values() for _, u in picks}):
        t = storage.read_parquet(uri, columns=["sample_id", "split", *IMAGE_COLUMNS])
        for r in t.to_pylist():
            if r["sample_id"] in want:
                images[r["sample_id"]] = r
    if not images:
        storage.delete(join(output, GRID_FILE))
        return []
    gap = 4
    sources = sorted(chosen)
    width = per_source * (len(IMAGE_COLUMNS) * thumb + gap) + gap
    canvas = Image.new("RGB", (width, len(sources) * (thumb + gap) + gap), (255, 255, 255))
    shown = []
    for row, src in enumerate(sources):
        for k, (sid, _) in enumerate(chosen[src]):
            r = images[sid]
            for j, col in enumerate(IMAGE_COLUMNS):
                with Image.open(io.BytesIO(r[col])) as im:
                    tile = ImageOps.fit(im.convert("RGB"), (thumb, thumb), Image.Resampling.BICUBIC)
                canvas.paste(tile, (gap + k * (len(IMAGE_COLUMNS) * thumb + gap) + j * thumb, gap + row * (thumb + gap)))
            shown.append({"source": src, "sample_id": sid, "split": r["split"]})
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")  # PIL writes no timestamp: same pixels, same bytes
    storage.write_bytes(join(output, GRID_FILE), buf.getvalue())
    return shown


# ---------------------------------------------------------------------------------------
# The card.


def write_card(output: str, storage: Storage, counts: dict, manifest: dict, stats_md: str) -> str:
    """Write README.md (and assets/grid.png) from the output folder's config.yaml, the counts
    and the manifest. The build calls it after writing config.yaml; release and takedowns call
    it again. Returns the card's text."""
    config = yaml.safe_load(storage.read_bytes(join(output, CONFIG_FILE))) or {}
    grid = write_grid(output, storage)
    rights = rights_summary(output, storage, saved_overrides(output, storage))
    text = render_card(config, counts, manifest, stats_md, grid, rights)
    storage.write_text(join(output, CARD_FILE), text)
    return text


def render_card(config: dict, counts: dict, manifest: dict, stats_md: str, grid: list[dict] | None = None,
                rights: dict | None = None) -> str:
    """The card's text: YAML front matter, then the description. `config` is the build config as
    a mapping (config.yaml of the output, or BuildConfig.to_dict())."""
    meta = yaml.safe_dump(front_matter(counts), sort_keys=False, allow_unicode=True)
    sources = ", ".join(f"{s['name']} ({s['format']})" for s in config.get("sources", []))
    tr, cap = manifest["translator"], manifest["captioner"]
    version = manifest.get("dataset_version", INITIAL_VERSION)
    near_radius = config.get("dedup", {}).get("near_radius", "?")
    seed = config.get("split", {}).get("seed", "?")
    return f"""---
{meta}---

# FusionRS-style RGB–IR–text dataset

Dataset version {version}. Built by fusionrs {manifest['fusionrs_version']} (config fingerprint
`{manifest['config_fingerprint']}`).

**The infrared modality is synthetic.** Every IR image was generated from its RGB image by the
`{tr['backend']}` translator ({tr.get('version', '')}); it is infrared-*style*, not a physical
thermal measurement, and may carry translation artifacts and intensity biases. Validate on
real sensor-paired RGB–IR data before drawing physical conclusions.

- Sources: {sources}. Upstream licences and redistribution terms apply per source; this build
  stores derived images — check each source's terms before publishing (rights below).
- IR-aware captions: `{cap['backend']}` captioner ({cap.get('version', cap.get('model', ''))}), filtered by
  the strict-v3 categories, length bounds, "repeats the original without IR cues" and "weak IR
  cues" rules.
- Split: whole joint groups (pHash64 Hamming <= {near_radius}, exact SHA-256, equal
  normalized captions) per split, seed {seed}; zero groups cross splits.
- Files: `triplets/<part>-<split>.parquet` (schema in the fusionrs docs, `docs/schema.md`), `rejects/*.parquet`
  (one row per rejected input with `stage` and `reason`), `manifest.json`, `config.yaml`, `stats.md`.
{_grid_md(grid)}
## Loading

```python
from datasets import load_dataset
ds = load_dataset("PATH_OR_HUB_ID")             # train / val / test; rgb_jpeg and ir_jpeg decode to PIL images
ir_aware = load_dataset("PATH_OR_HUB_ID", "iraware")  # rows whose IR-aware caption was accepted
```

Or read `triplets/*.parquet` with pyarrow, pandas, DuckDB or Ray Data (`split` is a column too).
Train on IR-aware captions only where `ir_caption_status == "{IR_CAPTION_ACCEPTED}"`; evaluate on
`is_eval_representative` rows of val and test (one per joint group).

## Rights and licences

The card's licence is `other`: each source keeps its upstream terms. The rights codes below are
the official FusionRS public index's (`source_rights_code`); the official release distributes an
index only, no images, for these reasons. Publishing these files — which contain the RGB images
and images derived from them — needs each source's redistribution terms checked first.
Per-source counts: `{RIGHTS_FILE}`.

{_rights_md(rights)}

Takedown requests name a `sample_id`; removed rows are listed in `tombstones.json` and
`manifest.json` (`tombstones`), and each takedown bumps the dataset version (fusionrs docs, `docs/release.md`).
{_changelog_md(manifest)}
## Citation

```bibtex
@article{{han2026fusionrs,
  title   = {{FusionRS: A Large-Scale RGB--Infrared Remote Sensing Dataset for Dual-Modal
             Vision--Language Foundation Models}},
  author  = {{Han and others}},
  journal = {{arXiv preprint arXiv:2606.17020}},
  year    = {{2026}}
}}
```

Cite the upstream sources you use as well (RS5M, SkyScript, NWPU-Captions, RSICD, RSITMD) and,
for the translator, DiffV2IR (arXiv:2503.19012).

{stats_md}
"""


def _grid_md(grid: list[dict] | None) -> str:
    if not grid:
        return ""
    rows = "\n".join(f"| {g['source']} | `{g['sample_id']}` | {g['split']} |" for g in grid)
    return f"""
## Examples

![RGB | IR pairs, one row per source]({GRID_FILE})

Each row: one source; each pair: RGB, then its synthetic IR image. Shown, left to right:

| source | sample_id | split |
|---|---|---|
{rows}
"""


def _rights_md(rights: dict | None) -> str:
    if not rights or not rights.get("sources"):
        return "(no rows)"
    lines = ["| source | rows | rights code (rows) | upstream note |", "|---|---|---|---|"]
    for src, e in rights["sources"].items():
        codes = ", ".join(f"`{c}` ({n:,})" for c, n in e["rights_codes"].items())
        lines.append(f"| {src} | {e['rows']:,} | {codes} | {e['note'] or '—'} |")
    return "\n".join(lines)


def _changelog_md(manifest: dict) -> str:
    log = manifest.get("changelog") or []
    if not log:
        return ""
    rows = "\n".join(f"| {c['version']} | {c['date']} | {c['change']} |" for c in log)
    return f"\n## Changelog\n\n| version | date | change |\n|---|---|---|\n{rows}\n"


def release_date(manifest: dict) -> str:
    """The build's date (UTC), from the manifest: the same for every rerun of the release step."""
    return datetime.fromtimestamp(int(manifest.get("created_unix", 0)), tz=timezone.utc).date().isoformat()
