"""Six-direction retrieval metrics at N×N: total time, and how much of it is the three similarity
products (the floor on this machine) versus ranking.

    python bench/retrieval_speed.py                  # 10,000 × 10,000, 512-d
    python bench/retrieval_speed.py --n 5000 --dim 256
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fusionrs.eval.retrieval import _normalise, six_directions  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    base = rng.standard_normal((a.n, a.dim), dtype=np.float32)
    # Correlated modalities, so most queries are hits and the tie checks run (the slow path).
    emb = {m: base + rng.standard_normal((a.n, a.dim), dtype=np.float32) for m in ("rgb", "ir", "text")}
    ids = [f"s{i}" for i in range(a.n)]
    keys = [f"k{i // 2}" for i in range(a.n)]  # pairs share a caption key: multi-positive
    totals, products = [], []
    for _ in range(a.repeats):
        t = time.perf_counter()
        for x, y in (("ir", "text"), ("rgb", "ir"), ("rgb", "text")):
            _normalise(emb[x]) @ _normalise(emb[y]).T
        products.append(time.perf_counter() - t)
        t = time.perf_counter()
        r = six_directions(emb, ids, keys)
        totals.append(time.perf_counter() - t)
    total, prod = min(totals), min(products)
    print(f"{a.n}×{a.n}, {a.dim}-d, six directions, {torch.get_num_threads()} threads (best of {a.repeats}): "
          f"total {total:.2f} s = similarity products {prod:.2f} s + ranking {total - prod:.2f} s "
          f"(Mean R {r['mean_r']:.2f})")


if __name__ == "__main__":
    main()
