"""Caltech Aerial RGB-T: exact-pair RGB↔thermal retrieval on the official split files.

    python -c "from fusionrs.eval.caltech import read_caltech_pairs as r; \
        print(len(r('/data/caltech_aerial_rgbt', '/data/caltech_aerial_rgbt/splits/rgbt_splits', 'test')))"

Layout (Lee et al., "Caltech Aerial RGB-Thermal Dataset in the Wild", 2024; the RGB-T split is in
the dataset repository's `caltech_aerial_thermal_dataset/splits/rgbt_splits`):
- `<splits_root>/rgb_<split>.txt` and `<splits_root>/thermal8_<split>.txt`, one `image,mask`
  line each, paths relative to the dataset root (e.g. `.../color/x.png,.../masks/x.png` and
  `.../thermal8/x.png,.../masks/x.png`);
- an RGB line and a thermal line with the same mask are one exact pair (the mask is the
  segmentation label both images share). The pair's id is the mask's file stem.
Both files must pair up one to one (same mask set, each mask once) and every listed file must
exist; otherwise the reader raises, naming the file and line or the missing paths. Pairs keep
the RGB file's order.

Score (official eval_clip_caltech_rgbt_retrieval.py, implementation §7.2): RGB→thermal and
thermal→RGB R@1/5/10 with the pair as the only positive; the mean of those 6 values. The
official test split has 279 pairs.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import numpy as np

from fusionrs.core.storage import Storage, join
from fusionrs.eval.probe import mean_recall, pair_recall


@dataclass(frozen=True)
class CaltechPair:
    sample_id: str  # the mask's file stem
    rgb: str  # URIs
    thermal: str
    mask: str


def read_split_file(uri: str, storage: Storage | None = None) -> list[tuple[str, str]]:
    """(image, mask) per non-empty line of an `image,mask` split file."""
    storage = storage or Storage()
    rows = []
    for n, line in enumerate(storage.read_bytes(uri).decode("utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        image, sep, mask = (p.strip() for p in line.partition(","))
        if not sep or not image or not mask:
            raise ValueError(f"{uri}:{n}: expected 'image,mask', got {line!r}")
        for p in (image, mask):
            # Paths are joined under the dataset root: relative, and never leaving it.
            if p.startswith("/") or "://" in p or ".." in p.replace("\\", "/").split("/"):
                raise ValueError(f"{uri}:{n}: path must be relative to the dataset root, got {p!r}")
        rows.append((image, mask))
    return rows


def _by_mask(rows: list[tuple[str, str]], uri: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for image, mask in rows:
        if mask in out:
            raise ValueError(f"{uri}: mask {mask!r} listed twice")
        out[mask] = image
    return out


def read_caltech_pairs(dataset_root: str, splits_root: str, split: str = "test", storage: Storage | None = None,
                       check_files: bool = True) -> list[CaltechPair]:
    storage = storage or Storage()
    rgb_uri, thermal_uri = join(splits_root, f"rgb_{split}.txt"), join(splits_root, f"thermal8_{split}.txt")
    rgb_rows = read_split_file(rgb_uri, storage)
    rgb, thermal = _by_mask(rgb_rows, rgb_uri), _by_mask(read_split_file(thermal_uri, storage), thermal_uri)
    if set(rgb) != set(thermal):
        only_rgb, only_t = sorted(set(rgb) - set(thermal)), sorted(set(thermal) - set(rgb))
        raise ValueError(f"RGB/thermal split mismatch ({split}): rgb={len(rgb)} thermal={len(thermal)}; "
                         f"masks only in rgb {only_rgb[:3]}, only in thermal {only_t[:3]}")
    pairs = [CaltechPair(posixpath.splitext(posixpath.basename(mask.replace("\\", "/")))[0],
                         join(dataset_root, rgb[mask]), join(dataset_root, thermal[mask]), join(dataset_root, mask))
             for _, mask in rgb_rows]
    if check_files:
        missing = [u for p in pairs for u in (p.rgb, p.thermal, p.mask) if not storage.exists(u)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} files of the {split} split missing, e.g. {missing[:3]}")
    ids = [p.sample_id for p in pairs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{rgb_uri}: two masks share a file stem; pair ids would collide")
    return pairs


def caltech_retrieval(rgb_emb, thermal_emb) -> dict:
    """RGB→thermal and thermal→RGB R@1/5/10 (%) on exact pairs (row i ↔ row i), and their mean."""
    rgb_emb, thermal_emb = np.asarray(rgb_emb), np.asarray(thermal_emb)
    if rgb_emb.shape[0] != thermal_emb.shape[0]:
        raise ValueError(f"{rgb_emb.shape[0]} RGB vs {thermal_emb.shape[0]} thermal embeddings")
    metrics = {"RGB->thermal": pair_recall(rgb_emb, thermal_emb), "thermal->RGB": pair_recall(thermal_emb, rgb_emb)}
    return {"pairs": int(rgb_emb.shape[0]), "mean_recall": mean_recall(metrics), "metrics": metrics}
