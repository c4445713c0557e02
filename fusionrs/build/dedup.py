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


def group_samples(sample_ids: list[str], phash_hex: list[str], sha256: list[str],
                  caption_keys: list[str | None], radius: int = 4, use_captions: bool = True,
                  ir_phash_hex: list[str] | None = None, ir_sha256: list[str] | None = None) -> GroupingResult:
    """Joint groups (official implementation §3.2): RGB SHA-256, RGB pHash ≤ r, IR SHA-256,
    IR pHash ≤ r and equal caption keys, unioned. The IR lists are optional (None: RGB only)."""
    n = len(sample_ids)
    uf = UnionFind(n)
    stats: dict = {"samples": n}

    def union_equal(keys: list) -> int:
        first: dict = {}
        unions = 0
        for i, k in enumerate(keys):
            if k is None:
                continue
            if k in first:
                unions += uf.union(first[k], i)
            else:
                first[k] = i
        return unions

    def union_near(hex_hashes: list[str]) -> tuple[int, int]:
        hashes = np.array([int(h, 16) for h in hex_hashes], dtype=np.uint64)
        uniq, first_index = np.unique(hashes, return_index=True)
        i, j, _ = near_pairs(uniq, radius)
        return int(len(i)), uf.union_arrays(first_index[i], first_index[j])

    stats["exact_sha256_unions"] = union_equal(sha256)
    stats["exact_phash_unions"] = union_equal(phash_hex)
    stats["near_pairs"], stats["near_unions"] = union_near(phash_hex)
    if ir_phash_hex is not None and ir_sha256 is not None:
        stats["ir_exact_sha256_unions"] = union_equal(ir_sha256)
        stats["ir_exact_phash_unions"] = union_equal(ir_phash_hex)
        stats["ir_near_pairs"], stats["ir_near_unions"] = union_near(ir_phash_hex)
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
