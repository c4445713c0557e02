"""Leak-free group split and IR-aware-caption subset selection.

Whole joint groups go to one split, so no near-duplicate image or shared caption crosses
splits. Targets are per source: counts (the paper's Table 2, scaled pro rata to what survives
cleaning and translation) or fractions. Held-out splits are filled first, preferring
single-source, small groups, in an order fixed by sha256(seed, group), so the split depends only
on the input and the seed — not on a prior split (a weakness of the official builder, §12.2).
Where that greedy pass leaves a (split, source) short, an exact whole-group subset sum over that
source's single-source groups fills it, as the official builder's exact fill does (§3.3 step 5).
With `split.counts`, a target still missed is an error naming source, split, target and reached
(`split.allow_short=true`: a warning in the manifest instead).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from fusionrs.dataset.schema import HELDOUT, SPLITS


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
    shortfalls: list[dict] = field(default_factory=list)  # {source, split, target, reached} (allow_short)


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
            if assigned[split][src] < need:
                _exact_fill(split, src, need, gsrc, by_group, group_split, assigned, cfg.seed)
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
    shortfalls = [{"source": src, "split": sp, "target": targets[src][sp], "reached": assigned[sp][src]}
                  for src in sorted(targets) for sp in HELDOUT if assigned[sp][src] != targets[src][sp]]
    if cfg.counts and shortfalls and not cfg.allow_short:
        f = shortfalls[0]
        raise SplitError(f"source {f['source']}: {f['split']} reached {f['reached']} of its target {f['target']} rows "
                         f"(whole joint groups cannot make the exact count); set split.allow_short=true to accept "
                         f"a short split (recorded in the manifest)")

    split = [group_split[g] for g in group_ids]
    # One evaluation representative per group in val/test: its smallest sample_id (the rows here
    # are the translated ones, so a representative always has its IR image).
    rep = {g: min(sample_ids[i] for i in idx) for g, idx in by_group.items()}
    is_rep = [split[i] in HELDOUT and rep[group_ids[i]] == sample_ids[i] for i in range(n)]
    achieved = {src: {s: assigned[s][src] for s in SPLITS} for src in targets}
    return SplitResult(split, is_rep, targets, achieved, shortfalls)


def _exact_fill(split, src, need, gsrc, by_group, group_split, assigned, seed) -> None:
    """Re-choose `src`'s single-source groups in `split` so its rows reach `need` exactly, when
    some subset of them (already chosen or still free) sums to it: a whole-group subset sum as a
    Python-int bitset, stopping at the first prefix (in a fixed, seeded order) that reaches it."""
    mine = [g for g, c in gsrc.items() if len(c) == 1 and src in c
            and (group_split.get(g) == split or g not in group_split)]
    fixed = assigned[split][src] - sum(len(by_group[g]) for g in mine if group_split.get(g) == split)
    target = need - fixed  # rows of src this split needs from single-source groups
    cands = sorted((g for g in mine if len(by_group[g]) <= target),
                   key=lambda g: (len(by_group[g]), _digest(seed, "fill", split, src, g)))
    reach, first_by = 1, {0: (-1, 0)}  # sum → (candidate index that first reached it, previous sum)
    for k, g in enumerate(cands):
        size = len(by_group[g])
        new = (reach | (reach << size)) & ((1 << (target + 1)) - 1)
        diff = new & ~reach
        while diff:
            bit = diff & -diff
            total = bit.bit_length() - 1
            first_by[total] = (k, total - size)
            diff ^= bit
        reach = new
        if reach >> target & 1:
            break
    if not reach >> target & 1:
        return  # no exact subset: the caller reports the shortfall
    chosen, total = set(), target
    while total:
        k, total = first_by[total]
        chosen.add(cands[k])
    for g in mine:
        if group_split.get(g) == split and g not in chosen:
            del group_split[g]
        elif g in chosen and g not in group_split:
            group_split[g] = split
    assigned[split][src] = fixed + target


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
