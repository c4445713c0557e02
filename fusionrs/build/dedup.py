"""Perceptual dedup and joint grouping, without all-pairs comparison.

Near duplicates (pHash64 Hamming <= r) are found by multi-index hashing: the 64 bits are cut
into r+1 chunks; by the pigeonhole principle two hashes within distance r agree exactly on at
least one chunk, so only hashes sharing a chunk value are compared. Exact SHA-256 duplicates,
near-duplicate pairs and equal normalized captions are unioned into joint groups; a group is
the unit that the split assigns (official implementation §3.2).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


class UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, x: int) -> int:
        p = self.parent
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:  # path compression
            p[x], x = root, p[x]
        return int(root)

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if ra < rb:
            ra, rb = rb, ra
        self.parent[ra] = rb  # the smaller index is the root: deterministic
        return True

    def union_arrays(self, a: np.ndarray, b: np.ndarray) -> int:
        return sum(self.union(int(x), int(y)) for x, y in zip(a, b))

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def chunk_layout(radius: int, bits: int = 64) -> list[tuple[int, int]]:
    """(shift, width) of r+1 near-equal chunks covering all bits."""
    m = radius + 1
    widths = [bits // m + (1 if i < bits % m else 0) for i in range(m)]
    out, shift = [], bits
    for w in widths:
        shift -= w
        out.append((shift, w))
    return out


def near_pairs(hashes: np.ndarray, radius: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) of *distinct* values in `hashes` (uint64) within Hamming `radius`.

    Returns index arrays into `hashes` and their distances. Equal values are distance 0 and
    are the caller's to union (they are exact pHash duplicates).
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    if len(hashes) < 2:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e
    found_i, found_j = [], []
    for shift, width in chunk_layout(radius):
        keys = (hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        ends = np.r_[starts[1:], len(sk)]
        for s, e in zip(starts[ends - starts >= 2], ends[ends - starts >= 2]):
            idx = order[s:e]
            h = hashes[idx]
            for r0 in range(0, len(idx), block):  # bounded memory for huge buckets
                d = np.bitwise_count(h[r0:r0 + block, None] ^ h[None, :])
                ii, jj = np.nonzero(d <= radius)
                ii = ii + r0
                keep = ii < jj
                found_i.append(idx[ii[keep]])
                found_j.append(idx[jj[keep]])
    if not found_i:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e
    i = np.concatenate(found_i)
    j = np.concatenate(found_j)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    pair = np.unique(np.stack([lo, hi], 1), axis=0)  # a pair can share several chunks
    i, j = pair[:, 0], pair[:, 1]
    d = np.bitwise_count(hashes[i] ^ hashes[j]).astype(np.int64)
    distinct = d > 0
    return i[distinct], j[distinct], d[distinct]


@dataclass
class GroupingResult:
    group_id: list[str]  # per sample, "group-<20 hex>"
    group_size: np.ndarray
    stats: dict


def equality_codes(keys) -> np.ndarray:
    """Equal keys → equal codes ≥ 0; no key (None) → -1. `keys`: a list of any hashable values,
    or an array: int64 codes as given (the compact plan input, plan.py), uint64 hashes coded."""
    if isinstance(keys, np.ndarray):
        return np.unique(keys, return_inverse=True)[1].reshape(-1) if keys.dtype == np.uint64 else keys
    index: dict = {}
    return np.array([-1 if k is None else index.setdefault(k, len(index)) for k in keys], dtype=np.int64)


def phash_values(hashes) -> np.ndarray:
    """pHash64 values as uint64: from hex strings (phash_hex writes 16 lowercase digits, so equal
    strings and equal values agree), or already an uint64 array."""
    if isinstance(hashes, np.ndarray):
        return hashes.astype(np.uint64, copy=False)
    return np.array([int(h, 16) for h in hashes], dtype=np.uint64)


def group_samples(sample_ids: list[str], phash_hex, sha256, caption_keys, radius: int = 4,
                  use_captions: bool = True, ir_phash_hex=None, ir_sha256=None) -> GroupingResult:
    """Joint groups (official implementation §3.2): RGB SHA-256, RGB pHash ≤ r, IR SHA-256,
    IR pHash ≤ r and equal caption keys, unioned. The IR columns are optional (None: RGB only).
    pHash columns: hex strings or uint64 values; SHA-256 and caption keys: values (None: no
    key) or equality codes (equality_codes)."""
    n = len(sample_ids)
    uf = UnionFind(n)
    stats: dict = {"samples": n}

    def union_equal(keys) -> int:
        # Every row with a key joins the first row with that key, in row order.
        codes = equality_codes(keys)
        rows = np.flatnonzero(codes >= 0)
        _, first, inverse = np.unique(codes[rows], return_index=True, return_inverse=True)
        firsts = rows[first[inverse.reshape(-1)]]
        later = firsts != rows
        return uf.union_arrays(firsts[later], rows[later])

    def union_near(hashes: np.ndarray) -> tuple[int, int]:
        uniq, first_index = np.unique(hashes, return_index=True)
        i, j, _ = near_pairs(uniq, radius)
        return int(len(i)), uf.union_arrays(first_index[i], first_index[j])

    stats["exact_sha256_unions"] = union_equal(sha256)
    phash = phash_values(phash_hex)
    stats["exact_phash_unions"] = union_equal(phash)
    stats["near_pairs"], stats["near_unions"] = union_near(phash)
    if ir_phash_hex is not None and ir_sha256 is not None:
        stats["ir_exact_sha256_unions"] = union_equal(ir_sha256)
        ir_phash = phash_values(ir_phash_hex)
        stats["ir_exact_phash_unions"] = union_equal(ir_phash)
        stats["ir_near_pairs"], stats["ir_near_unions"] = union_near(ir_phash)
    stats["caption_unions"] = union_equal(caption_keys) if use_captions else 0

    roots = uf.roots()
    members: dict[int, list[int]] = {}
    for idx, r in enumerate(roots):
        members.setdefault(int(r), []).append(idx)
    gid = [""] * n
    size = np.zeros(n, dtype=np.int64)
    for r, idxs in members.items():
        # Named by its members, so the id does not depend on input order.
        name = "group-" + hashlib.sha256("\n".join(sorted(sample_ids[k] for k in idxs)).encode()).hexdigest()[:20]
        for k in idxs:
            gid[k] = name
            size[k] = len(idxs)
    stats["groups"] = len(members)
    stats["multi_sample_groups"] = sum(len(v) > 1 for v in members.values())
    stats["largest_group"] = int(size.max()) if n else 0
    return GroupingResult(gid, size, stats)
