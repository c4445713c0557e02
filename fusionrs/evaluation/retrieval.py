"""Retrieval R@K over embeddings, in six directions, with multi-positive keys.

A query hits at K when a positive is among its top K. Positives are gallery items with the
same key: the normalized caption key (official §3.4, the same key the split uses) for text,
the sample_id for RGB↔IR. Ties are broken by gallery index, deterministically: the rank of a
query's best positive = #items scoring higher + #items scoring equal at a lower index.
Similarities are computed once per modality pair, in query chunks, and serve both directions.

Mean R (paper Table 4) = mean of the 12 values of IR→Text, Text→IR, RGB→IR, IR→RGB; the mean
over all six directions is reported beside it.
"""

from __future__ import annotations

import numpy as np
import torch

KS = (1, 5, 10)
DIRECTIONS = [("ir", "text"), ("text", "ir"), ("rgb", "ir"), ("ir", "rgb"), ("rgb", "text"), ("text", "rgb")]
NAMES = {"ir": "IR", "rgb": "RGB", "text": "Text"}
PAPER_MEAN = [("ir", "text"), ("text", "ir"), ("rgb", "ir"), ("ir", "rgb")]


def _codes(keys) -> torch.Tensor:
    _, inv = np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True)
    return torch.from_numpy(inv.astype(np.int64))


def best_positive_ranks(sim: torch.Tensor, q_codes: torch.Tensor, g_codes: torch.Tensor) -> torch.Tensor:
    """Rank (0-based) of each query's best positive; a large number when it has none."""
    pos = q_codes[:, None] == g_codes[None, :]
    masked = sim.masked_fill(~pos, float("-inf"))
    best, best_idx = masked.max(dim=1)  # first index among equal maxima
    higher = (sim > best[:, None]).sum(1)
    idx = torch.arange(sim.shape[1])[None, :]
    tied_before = ((sim == best[:, None]) & (idx < best_idx[:, None])).sum(1)
    rank = higher + tied_before
    return torch.where(pos.any(1), rank, torch.full_like(rank, 1 << 40))


def recall_at_k(query, gallery, query_keys, gallery_keys, ks=KS, chunk: int = 2048) -> dict[int, float]:
    """R@K in percent for one direction; embeddings are L2-normalised here."""
    sim = _normalise(query) @ _normalise(gallery).T
    return _recalls(_ranks(sim, query_keys, gallery_keys, chunk), ks)


def _normalise(x) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.as_tensor(np.asarray(x), dtype=torch.float32), dim=-1)


def _ranks(sim: torch.Tensor, query_keys, gallery_keys, chunk: int) -> torch.Tensor:
    codes = _codes(list(query_keys) + list(gallery_keys))
    qc, gc = codes[: sim.shape[0]], codes[sim.shape[0]:]
    return torch.cat([best_positive_ranks(sim[s:s + chunk], qc[s:s + chunk], gc) for s in range(0, sim.shape[0], chunk)])


def _recalls(ranks: torch.Tensor, ks) -> dict[int, float]:
    return {k: float((ranks < k).float().mean() * 100) for k in ks}


def six_directions(emb: dict[str, np.ndarray], sample_ids, caption_keys, ks=KS, chunk: int = 2048) -> dict:
    """emb: rgb, ir, text arrays aligned with sample_ids (one evaluation row each)."""
    out: dict = {}
    for a, b in (("ir", "text"), ("rgb", "ir"), ("rgb", "text")):
        # Image↔text positives share the caption key; RGB↔IR positives are the same sample.
        keys = caption_keys if "text" in (a, b) else sample_ids
        sim = _normalise(emb[a]) @ _normalise(emb[b]).T  # once per pair, both directions
        out[f"{NAMES[a]}->{NAMES[b]}"] = _recalls(_ranks(sim, keys, keys, chunk), ks)
        out[f"{NAMES[b]}->{NAMES[a]}"] = _recalls(_ranks(sim.T, keys, keys, chunk), ks)
    paper = [v for a, b in PAPER_MEAN for v in out[f"{NAMES[a]}->{NAMES[b]}"].values()]
    out["mean_r"] = float(np.mean(paper))
    out["mean_all"] = float(np.mean([v for a, b in DIRECTIONS for v in out[f"{NAMES[a]}->{NAMES[b]}"].values()]))
    return out


def markdown_table(results: dict[str, dict], title: str = "") -> str:
    """Paper Table 4 layout: model | Mean R | IR→Text | Text→IR | RGB→IR | IR→RGB (R@1/5/10)."""
    lines = [f"### {title}" if title else "",
             "| Model | Mean R | IR→Text R@1/5/10 | Text→IR R@1/5/10 | RGB→IR R@1/5/10 | IR→RGB R@1/5/10 | RGB→Text R@1/5/10 | Text→RGB R@1/5/10 | Mean (6 dirs) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        cells = [" / ".join(f"{r[d][k]:.2f}" for k in KS) for d in
                 ("IR->Text", "Text->IR", "RGB->IR", "IR->RGB", "RGB->Text", "Text->RGB")]
        lines.append(f"| {name} | {r['mean_r']:.2f} | " + " | ".join(cells) + f" | {r['mean_all']:.2f} |")
    return "\n".join(l for l in lines if l is not None)
