"""Leak-free group split and IR-aware-caption subset selection.

Whole joint groups go to one split, so no near-duplicate image or shared caption crosses
splits. Targets are per source: counts (the paper's Table 2, scaled pro rata to what survives
cleaning) or fractions. Held-out splits are filled first, preferring single-source, small
groups, in an order fixed by sha256(seed, group), so the split depends only on the input and
the seed — not on a prior split (a weakness of the official builder, §12.2).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass

SPLITS = ("train", "val", "test")
HELDOUT = ("val", "test")


class SplitError(ValueError):
    pass


def _digest(*parts) -> str:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()


def split_targets(source_counts: dict[str, int], cfg) -> dict[str, dict[str, int]]:
    """Per-source {train, val, test} row targets."""
    out = {}
    for src, n in sorted(source_counts.items()):
        if src in cfg.counts:
            c = cfg.counts[src]
            total = sum(c.values())
            if total != n:
                if not cfg.scale_counts:
                    raise SplitError(f"split.counts.{src} sums to {total} but {n} usable rows remain "
                                     f"(set split.scale_counts=true to scale)")
                val, test = round(c["val"] * n / total), round(c["test"] * n / total)
            else:
                val, test = c["val"], c["test"]
        else:
            val, test = round(cfg.fractions["val"] * n), round(cfg.fractions["test"] * n)
            m = cfg.min_heldout_per_source
            if n >= 3 * m:  # the minimum applies where the source can afford it
                val, test = max(val, m), max(test, m)
        out[src] = {"train": n - val - test, "val": val, "test": test}
    return out


@dataclass
class SplitResult:
    split: list[str]
    is_eval_representative: list[bool]
    targets: dict[str, dict[str, int]]
    achieved: dict[str, dict[str, int]]


def assign_splits(sample_ids: list[str], sources: list[str], group_ids: list[str], cfg) -> SplitResult:
    n = len(sample_ids)
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(group_ids):
        by_group[g].append(i)
    gsrc = {g: Counter(sources[i] for i in idx) for g, idx in by_group.items()}
    targets = split_targets(Counter(sources), cfg)
    assigned = {s: Counter() for s in SPLITS}
    group_split: dict[str, str] = {}

    for split in HELDOUT:
        # Scarce sources first, so a multi-source group cannot eat their quota.
        order = sorted(targets, key=lambda s: (sum(targets[s].values()) / max(1, targets[s][split]), s))
        for src in order:
            need = targets[src][split]
            if need <= 0:
                continue
            cands = sorted((g for g, c in gsrc.items() if src in c and g not in group_split),
                           key=lambda g: (len(gsrc[g]) > 1, len(by_group[g]), _digest(cfg.seed, split, src, g)))
            for g in cands:
                if assigned[split][src] >= need:
                    break
                c = gsrc[g]
                if all(assigned[split][s] + k <= targets[s][split] for s, k in c.items()):
                    group_split[g] = split
                    assigned[split].update(c)
    for g, c in gsrc.items():
        if g not in group_split:
            group_split[g] = "train"
            assigned["train"].update(c)

    for src, t in targets.items():
        for split in HELDOUT:
            floor = min(cfg.min_heldout_per_source, t[split])
            if assigned[split][src] < floor:
                raise SplitError(
                    f"source {src}: {split} got {assigned[split][src]} rows, below the minimum {floor}; "
                    f"its groups are too large (largest: {max(len(by_group[g]) for g in gsrc if src in gsrc[g])} rows)")

    split = [group_split[g] for g in group_ids]
    # One evaluation representative per group in val/test: its smallest sample_id.
    rep = {g: min(sample_ids[i] for i in idx) for g, idx in by_group.items()}
    is_rep = [split[i] in HELDOUT and rep[group_ids[i]] == sample_ids[i] for i in range(n)]
    achieved = {src: {s: assigned[s][src] for s in SPLITS} for src in targets}
    return SplitResult(split, is_rep, targets, achieved)


def cross_split_groups(group_ids: list[str], splits: list[str]) -> int:
    seen: dict[str, set] = defaultdict(set)
    for g, s in zip(group_ids, splits):
        seen[g].add(s)
    return sum(len(v) > 1 for v in seen.values())


def select_subset(sample_ids: list[str], sources: list[str], splits: list[str], cfg) -> list[bool]:
    """Which samples get IR-aware captions: per (source, split) counts or per-split fractions."""
    pools: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (src, sp) in enumerate(zip(sources, splits)):
        pools[(src, sp)].append(i)
    chosen = [False] * len(sample_ids)
    for (src, sp), idx in pools.items():
        if src in cfg.counts:
            k = min(cfg.counts[src][sp], len(idx))
        else:
            k = round(cfg.fractions[sp] * len(idx))
        for i in sorted(idx, key=lambda i: _digest(cfg.seed, "subset", sample_ids[i]))[:k]:
            chosen[i] = True
    return chosen
