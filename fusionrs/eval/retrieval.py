"""Retrieval R@K over embeddings, in six directions, with multi-positive keys.

A query hits at K when a positive is among its top K. Positives are gallery items with the
same key: the normalized caption key (official §3.4, the same key the split uses) for text,
the sample_id for RGB↔IR. Ties are broken by gallery index, deterministically: the rank of a
query's best positive = #items scoring higher + #items scoring equal at a lower index.
Similarities are computed once per modality pair and serve both directions; ranking needs only
counting passes over query chunks (no sort, no Q×G positive mask), so the matrix product dominates.

Mean R (paper Table 4) = mean of the 12 values of IR→Text, Text→IR, RGB→IR, IR→RGB; the mean
over all six directions is reported beside it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

KS = (1, 5, 10)
DIRECTIONS = [("ir", "text"), ("text", "ir"), ("rgb", "ir"), ("ir", "rgb"), ("rgb", "text"), ("text", "rgb")]
NAMES = {"ir": "IR", "rgb": "RGB", "text": "Text"}
PAPER_MEAN = [("ir", "text"), ("text", "ir"), ("rgb", "ir"), ("ir", "rgb")]
NO_POSITIVE = 1 << 40


def _codes(query_keys, gallery_keys) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for the keys, shared between query and gallery (strings compared as str)."""
    q = np.asarray([str(k) for k in query_keys])
    g = np.asarray([str(k) for k in gallery_keys])
    _, inv = np.unique(np.concatenate([q, g]), return_inverse=True)
    return inv[: len(q)], inv[len(q):]


def positive_pairs(q_codes: np.ndarray, g_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (query row, gallery column) pairs with equal codes, without a Q×G mask.

    Positives are sparse (one per query for RGB↔IR, a handful for captions), so the gallery is
    sorted by code once and each query looks up its range.
    """
    order = np.argsort(g_codes, kind="stable")
    sorted_codes = g_codes[order]
    lo = np.searchsorted(sorted_codes, q_codes, "left")
    hi = np.searchsorted(sorted_codes, q_codes, "right")
    counts = hi - lo
    rows = np.repeat(np.arange(len(q_codes)), counts)
    starts = np.repeat(lo - np.cumsum(counts) + counts, counts)  # per pair: its range start − offset
    cols = order[starts + np.arange(counts.sum())]
    return rows, cols


def best_positive_ranks(sim: np.ndarray, q_codes: np.ndarray, g_codes: np.ndarray, max_k: int,
                        queries_on_rows: bool = True, chunk: int = 256) -> np.ndarray:
    """Rank (0-based) of each query's best positive, exact below max_k; NO_POSITIVE when it has none.

    rank = #items scoring higher + #items scoring equal at a lower gallery index. Only counting
    passes over row blocks of `sim` (no sort, no Q×G positive mask, no transposed copy: when the
    queries are the columns, counts accumulate down the rows). Ranks ≥ max_k may be lower bounds,
    which is enough for R@K with K ≤ max_k.
    """
    n_q = sim.shape[0] if queries_on_rows else sim.shape[1]
    n_g = sim.shape[1] if queries_on_rows else sim.shape[0]
    rows, cols = positive_pairs(q_codes, g_codes)
    values = sim[rows, cols] if queries_on_rows else sim[cols, rows]
    best = np.full(n_q, -np.inf, np.float32)
    np.maximum.at(best, rows, values)
    # First gallery index among a query's positives that reach its best score.
    at_best = values == best[rows]
    best_idx = np.full(n_q, n_g, np.int64)
    np.minimum.at(best_idx, rows[at_best], cols[at_best])

    def count(s: int) -> tuple[np.ndarray, np.ndarray]:  # (#higher, #equal) of one row block
        block = sim[s:s + chunk]
        if queries_on_rows:
            t = best[s:s + chunk, None]
            return (block > t).sum(1), (block == t).sum(1)
        return (block > best[None, :]).sum(0), (block == best[None, :]).sum(0)

    higher = np.zeros(n_q, np.int64)
    equal = np.zeros(n_q, np.int64)
    starts = range(0, sim.shape[0], chunk)
    # NumPy's comparisons and sums release the GIL: row blocks count in parallel threads (as many
    # as torch's intra-op pool, which a Ray task sets to its CPUs). Single-threaded, ranking took
    # 3× the similarity products on a 16-core host.
    with ThreadPoolExecutor(max(1, min(torch.get_num_threads(), len(starts)))) as pool:
        for s, (h, e) in zip(starts, pool.map(count, starts)):
            if queries_on_rows:
                higher[s:s + chunk], equal[s:s + chunk] = h, e
            else:
                higher += h
                equal += e
    rank = higher
    # Ties with the best (beyond the best itself) are rare; count those before it exactly, and
    # only where the rank could still be a hit.
    for q in np.nonzero((equal > 1) & (higher < max_k))[0]:
        scores = sim[q, :best_idx[q]] if queries_on_rows else sim[:best_idx[q], q]
        rank[q] += int((scores == best[q]).sum())
    return np.where(best_idx < n_g, rank, NO_POSITIVE)


def recall_at_k(query, gallery, query_keys, gallery_keys, ks=KS, chunk: int = 256) -> dict[int, float]:
    """R@K in percent for one direction; embeddings are L2-normalised here."""
    sim = (_normalise(query) @ _normalise(gallery).T).numpy()
    return _recalls(best_positive_ranks(sim, *_codes(query_keys, gallery_keys), max(ks), chunk=chunk), ks)


def _normalise(x) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.as_tensor(np.asarray(x), dtype=torch.float32), dim=-1)


def _recalls(ranks: np.ndarray, ks) -> dict[int, float]:
    return {k: float((ranks < k).mean() * 100) for k in ks}


def six_directions(emb: dict[str, np.ndarray], sample_ids, caption_keys, ks=KS, chunk: int = 256) -> dict:
    """emb: rgb, ir, text arrays aligned with sample_ids (one evaluation row each)."""
    out: dict = {}
    # Image↔text positives share the caption key; RGB↔IR positives are the same sample.
    codes = {"caption": _codes(caption_keys, [])[0], "sample": _codes(sample_ids, [])[0]}
    for a, b in (("ir", "text"), ("rgb", "ir"), ("rgb", "text")):
        c = codes["caption"] if "text" in (a, b) else codes["sample"]
        sim = (_normalise(emb[a]) @ _normalise(emb[b]).T).numpy()  # once per pair, both directions
        for queries_on_rows, name in ((True, f"{NAMES[a]}->{NAMES[b]}"), (False, f"{NAMES[b]}->{NAMES[a]}")):
            out[name] = _recalls(best_positive_ranks(sim, c, c, max(ks), queries_on_rows, chunk), ks)
    paper = [v for a, b in PAPER_MEAN for v in out[f"{NAMES[a]}->{NAMES[b]}"].values()]
    out["mean_r"] = float(np.mean(paper))
    out["mean_all"] = float(np.mean([v for a, b in DIRECTIONS for v in out[f"{NAMES[a]}->{NAMES[b]}"].values()]))
    return out


def retrieval_examples(emb: dict[str, np.ndarray], sample_ids, caption_keys, queries: int = 4, k: int = 5) -> list[dict]:
    """Queries with their top k, per direction, for the HTML report (retrieval_examples.json).
    The queries are the rows with the smallest sample_ids (the same rows for every model); ties
    are broken by gallery index, as in the ranks above; `hit` marks a positive (same caption key
    for text, same sample for RGB↔IR)."""
    q_rows = sorted(range(len(sample_ids)), key=lambda i: str(sample_ids[i]))[:queries]
    out = []
    for a, b in DIRECTIONS:
        positive = caption_keys if "text" in (a, b) else sample_ids
        sim = (_normalise(np.asarray(emb[a])[q_rows]) @ _normalise(emb[b]).T).numpy()
        for q, row in zip(q_rows, sim):
            out.append({"direction": f"{NAMES[a]}->{NAMES[b]}", "query": str(sample_ids[q]),
                        "top": [{"sample_id": str(sample_ids[j]), "score": round(float(row[j]), 4),
                                 "hit": str(positive[j]) == str(positive[q])}
                                for j in np.argsort(-row, kind="stable")[:k]]})
    return out


def per_source(emb: dict[str, np.ndarray], sample_ids, caption_keys, sources) -> dict[str, dict]:
    """six_directions within each source (sorted by name) that has at least two rows."""
    by_src: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        by_src.setdefault(str(s), []).append(i)
    return {s: six_directions({k: np.asarray(v)[idx] for k, v in emb.items()}, [sample_ids[i] for i in idx],
                              [caption_keys[i] for i in idx])
            for s, idx in sorted(by_src.items()) if len(idx) >= 2}


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
