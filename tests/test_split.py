import numpy as np
import pytest

from fusionrs.build.split import SplitError, assign_splits, cross_split_groups, select_subset, split_targets
from fusionrs.config.build import SplitConfig, SubsetConfig


def data(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    sources = rng.choice(["RS5M", "NWPU", "RSICD"], n, p=[0.7, 0.2, 0.1]).tolist()
    ids = [f"{s}-{i:05d}" for i, s in enumerate(sources)]
    # Groups of size 1..6, some mixing sources.
    groups, k = [], 0
    while len(groups) < n:
        size = int(rng.choice([1, 1, 1, 2, 3, 6]))
        groups += [f"g{k}"] * size
        k += 1
    return ids, sources, groups[:n]


def test_no_group_crosses_splits_and_targets_are_met():
    ids, src, grp = data()
    cfg = SplitConfig(seed=1, fractions={"train": 0.9, "val": 0.05, "test": 0.05})
    r = assign_splits(ids, src, grp, cfg)
    assert cross_split_groups(grp, r.split) == 0
    for s, t in r.targets.items():
        for sp in ("val", "test"):
            assert r.achieved[s][sp] <= t[sp] and r.achieved[s][sp] >= t[sp] - 6  # whole groups only
    # One evaluation representative per held-out group, none in train.
    reps = {}
    for g, sp, rep in zip(grp, r.split, r.is_eval_representative):
        if rep:
            assert sp != "train" and g not in reps
            reps[g] = True
    assert set(reps) == {g for g, sp in zip(grp, r.split) if sp != "train"}


def test_deterministic_for_seed_and_input_order():
    ids, src, grp = data()
    cfg = SplitConfig(seed=7)
    a = assign_splits(ids, src, grp, cfg).split
    perm = np.random.default_rng(3).permutation(len(ids))
    b = assign_splits([ids[i] for i in perm], [src[i] for i in perm], [grp[i] for i in perm], cfg).split
    assert dict(zip(ids, a)) == dict(zip([ids[i] for i in perm], b))
    c = assign_splits(ids, src, grp, SplitConfig(seed=8)).split
    assert a != c


def test_counts_are_scaled_to_the_usable_rows():
    cfg = SplitConfig(counts={"RS5M": {"train": 471729, "val": 8166, "test": 8138}})
    t = split_targets({"RS5M": 48803}, cfg)["RS5M"]
    assert t == {"train": 47172, "val": 817, "test": 814}  # 8166 and 8138 scaled by 48803/488033
    assert sum(t.values()) == 48803
    with pytest.raises(SplitError, match="scale_counts"):
        split_targets({"RS5M": 100}, SplitConfig(counts={"RS5M": {"train": 80, "val": 10, "test": 20}}, scale_counts=False))


def test_minimum_held_out_rows_is_enforced():
    ids = [f"x{i}" for i in range(30)]
    src = ["A"] * 30
    grp = ["g0"] * 30  # one giant group: nothing can be held out
    with pytest.raises(SplitError, match="source A"):
        assign_splits(ids, src, grp, SplitConfig(min_heldout_per_source=1))


def test_subset_selection_counts_and_fractions():
    ids, src, grp = data()
    sp = assign_splits(ids, src, grp, SplitConfig()).split
    chosen = select_subset(ids, src, sp, SubsetConfig(fractions={"train": 0.1, "val": 0.0, "test": 1.0}))
    test_rows = [c for c, s in zip(chosen, sp) if s == "test"]
    assert all(test_rows) and not any(c for c, s in zip(chosen, sp) if s == "val")
    n_train = sum(s == "train" for s in sp)
    assert abs(sum(c for c, s in zip(chosen, sp) if s == "train") - 0.1 * n_train) <= 3
    cfg = SubsetConfig(counts={"NWPU": {"train": 5, "val": 0, "test": 2}})
    chosen = select_subset(ids, src, sp, cfg)
    assert sum(c for c, s, x in zip(chosen, sp, src) if x == "NWPU" and s == "train") == 5
