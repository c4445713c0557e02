import numpy as np
import pytest

from fusionrs.build.dedup import chunk_layout, group_samples, near_pairs


def brute_force(hashes, r):
    out = set()
    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            d = bin(int(hashes[i]) ^ int(hashes[j])).count("1")
            if 0 < d <= r:
                out.add((i, j))
    return out


@pytest.mark.parametrize("radius", [0, 2, 4, 6])
def test_multi_index_equals_brute_force(radius):
    rng = np.random.default_rng(radius)
    base = rng.integers(0, 2**63, 300, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 300, dtype=np.uint64)
    # Plant neighbours at every distance 1..radius+2, so both sides of the boundary are tested.
    planted = []
    for k in range(60):
        h = int(base[k])
        bits = rng.choice(64, size=1 + k % (radius + 3), replace=False)
        for b in bits:
            h ^= 1 << int(b)
        planted.append(h)
    hashes = np.array(list(base) + planted, dtype=np.uint64)
    i, j, d = near_pairs(hashes, radius)
    got = set(zip(i.tolist(), j.tolist()))
    assert got == brute_force(hashes, radius)
    assert all(0 < x <= radius for x in d)


def test_chunks_cover_all_bits():
    for r in range(0, 9):
        lay = chunk_layout(r)
        assert len(lay) == r + 1 and sum(w for _, w in lay) == 64


def test_groups_union_exact_near_and_captions():
    ids = ["a", "b", "c", "d", "e", "f"]
    ph = ["0000000000000000", "0000000000000007", "ffffffffffffffff", "00ff00ff00ff00ff", "f0f0f0f0f0f0f0f0", "0f0f0f0f0f0f0f0f"]
    sha = ["s1", "s2", "s3", "s4", "s3", "s6"]  # c and e are the same file
    caps = [None, None, None, "k1", None, "k1"]  # d and f share a caption
    g = group_samples(ids, ph, sha, caps, radius=4)
    gid = dict(zip(ids, g.group_id))
    assert gid["a"] == gid["b"]  # distance 3
    assert gid["c"] == gid["e"]  # same sha256
    assert gid["d"] == gid["f"]  # same caption key
    assert len({gid["a"], gid["c"], gid["d"]}) == 3
    assert g.stats["near_pairs"] >= 1
    # Without caption grouping d and f separate; group ids do not depend on input order.
    g2 = group_samples(ids, ph, sha, caps, radius=4, use_captions=False)
    assert dict(zip(ids, g2.group_id))["d"] != dict(zip(ids, g2.group_id))["f"]
    rev = group_samples(ids[::-1], ph[::-1], sha[::-1], caps[::-1], radius=4)
    assert dict(zip(ids[::-1], rev.group_id)) == gid


def test_compact_columns_group_as_the_lists_do():
    """The plan's compact input (pHash as uint64, keys as equality codes: plan.read_plan_input)
    gives the same groups and the same union counts as the lists of strings."""
    from fusionrs.build.dedup import equality_codes, phash_values

    rng = np.random.default_rng(7)
    n = 400
    base = rng.integers(0, 2**63, n, dtype=np.uint64)
    base[50:60] = base[:10]  # exact pHash copies
    base[60:70] = base[10:20] ^ np.uint64(0b101)  # near copies
    ph = [f"{int(h):016x}" for h in base]
    ir = [f"{int(h):016x}" for h in base[::-1]]
    sha = [f"s{i % 350}" for i in range(n)]
    caps = [None if i % 3 else f"k{i % 40}" for i in range(n)]
    ir_sha = [f"i{i % 390}" for i in range(n)]
    ids = [f"A-{i:04d}" for i in range(n)]
    lists = group_samples(ids, ph, sha, caps, 4, True, ir, ir_sha)
    compact = group_samples(ids, phash_values(ph), equality_codes(sha), equality_codes(caps), 4, True,
                            phash_values(ir), equality_codes(ir_sha))
    assert compact.group_id == lists.group_id and compact.stats == lists.stats
    assert (compact.group_size == lists.group_size).all()
    assert lists.stats["exact_phash_unions"] == 10 and lists.stats["caption_unions"] > 0
    # IR near duplicates join groups: rows 60-69's IR hashes (base reversed) are near rows 10-19's.
    assert lists.stats["ir_near_unions"] > 0
    gid = dict(zip(ids, lists.group_id))
    assert all(gid[ids[n - 1 - i]] == gid[ids[n - 1 - (i - 50)]] for i in range(60, 70))
