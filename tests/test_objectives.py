"""The training objectives against hand computations: every CLIP setting's loss (terms and
denominator), the warmup-cosine schedule, the optimizer's parameter groups, and the image-cluster
bootstrap of the generative metrics (official implementation §6 and §10).

Each reference is written here in NumPy / plain Python; none calls the function it checks.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from fusionrs.eval.vlm_metrics import aggregate, bootstrap_ci, percentile
from fusionrs.train.clip.loss import trimodal_loss
from fusionrs.train.trainer import param_groups, warmup_cosine

# ---------------------------------------------------------------------------------------
# CLIP losses.


def _features(n: int = 7, d: int = 5, seed: int = 3) -> dict[str, np.ndarray]:
    """Four distinct modalities (text and text_ir differ, so swapping them changes every term)."""
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=(n, d)).astype(np.float64) * rng.uniform(0.5, 3.0) for k in ("rgb", "ir", "text", "text_ir")}


def _ce_rows(logits: np.ndarray) -> float:
    """Mean cross-entropy of each row against its own index (labels = arange), log-sum-exp stable."""
    m = logits.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse - np.diag(logits)))


def _pair(a: np.ndarray, b: np.ndarray, logit_scale: float) -> float:
    """½[CE(s·âb̂ᵀ) + CE((s·âb̂ᵀ)ᵀ)], s = exp(logit_scale), norms clamped at 1e-6 (§6)."""
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-6)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-6)
    logits = math.exp(logit_scale) * an @ bn.T
    return 0.5 * (_ce_rows(logits) + _ce_rows(logits.T))


def _reference(f: dict[str, np.ndarray], s: float, setting: str, w: float) -> tuple[float, dict[str, float]]:
    """The settings by hand: terms and denominators as docs/clip.md and §6 state them."""
    rt, it, ri = _pair(f["rgb"], f["text"], s), _pair(f["ir"], f["text"], s), _pair(f["rgb"], f["ir"], s)
    it_ir = _pair(f["ir"], f["text_ir"], s)
    if setting == "580k-only":
        return (rt + it + w * ri) / (2 + w), {"rgb_text": rt, "ir_text": it, "rgb_ir": ri}
    if setting == "A-original":
        return it, {"ir_text": it}
    if setting == "B-iraware":
        return it_ir, {"ir_text_ir": it_ir}
    if setting == "C-mixed":
        return (it + it_ir + rt + w * ri) / (3 + w), {"ir_text": it, "ir_text_ir": it_ir, "rgb_text": rt, "rgb_ir": ri}
    raise AssertionError(setting)


@pytest.mark.parametrize("setting,w", [("580k-only", 1.0), ("580k-only", 2.0), ("A-original", 1.0),
                                       ("B-iraware", 1.0), ("C-mixed", 1.0), ("C-mixed", 3.0)])
def test_each_setting_is_its_terms_over_its_denominator(setting, w):
    f = _features()
    s = 1.7  # exp(1.7) ≈ 5.5: logits far enough from 0 that every term differs
    expected_total, expected_parts = _reference(f, s, setting, w)
    feats = {k: torch.tensor(v, dtype=torch.float64) for k, v in f.items()}
    total, parts = trimodal_loss(feats, torch.tensor(s, dtype=torch.float64), setting, w=w, distributed=False)
    assert set(parts) == set(expected_parts)
    for k, v in expected_parts.items():
        assert parts[k] == pytest.approx(v, rel=1e-9), k
    assert float(total) == pytest.approx(expected_total, rel=1e-9)


def test_the_weight_scales_only_the_rgb_ir_term():
    """Terms chosen far apart: the settings' totals move with w exactly as (… + w·L_ri)/(k+w)."""
    f = _features(seed=11)
    s = 2.3
    feats = {k: torch.tensor(v, dtype=torch.float64) for k, v in f.items()}
    rt, it, ri = _pair(f["rgb"], f["text"], s), _pair(f["ir"], f["text"], s), _pair(f["rgb"], f["ir"], s)
    it_ir = _pair(f["ir"], f["text_ir"], s)
    for w in (0.0, 0.5, 4.0):
        got = float(trimodal_loss(feats, torch.tensor(s, dtype=torch.float64), "580k-only", w=w, distributed=False)[0])
        assert got == pytest.approx((rt + it + w * ri) / (2 + w), rel=1e-9), w
        got = float(trimodal_loss(feats, torch.tensor(s, dtype=torch.float64), "C-mixed", w=w, distributed=False)[0])
        assert got == pytest.approx((it + it_ir + rt + w * ri) / (3 + w), rel=1e-9), w
    # A-original and B-iraware have no RGB term: w changes nothing.
    for setting, ref in (("A-original", it), ("B-iraware", it_ir)):
        for w in (0.0, 5.0):
            got = float(trimodal_loss(feats, torch.tensor(s, dtype=torch.float64), setting, w=w, distributed=False)[0])
            assert got == pytest.approx(ref, rel=1e-9), (setting, w)


def test_unknown_setting_is_refused():
    f = {k: torch.tensor(v) for k, v in _features().items()}
    with pytest.raises(ValueError, match="unknown setting"):
        trimodal_loss(f, torch.tensor(1.0), "D-everything", distributed=False)


# ---------------------------------------------------------------------------------------
# Schedule.


def test_warmup_cosine_factor_at_hand_computed_steps():
    """warmup 10, total 110 (§6): max(1e-8, step/warmup) during warmup, then 0.5(1+cos(π·p)),
    p = (step − warmup)/(total − warmup), reaching 0 at `total`."""
    f = warmup_cosine(10, 110)
    hand = {
        0: 1e-8,  # max(1e-8, 0/10): never exactly zero
        1: 0.1,
        5: 0.5,  # mid-warmup
        9: 0.9,
        10: 1.0,  # end of warmup: p = 0, cos(0) = 1
        35: 0.5 + math.sqrt(2) / 4,  # p = 1/4: 0.5(1 + √2/2)
        60: 0.5,  # mid-cosine: p = 1/2
        85: 0.5 - math.sqrt(2) / 4,  # p = 3/4
        110: 0.0,  # end
    }
    for step, want in hand.items():
        assert f(step) == pytest.approx(want, abs=1e-12), step
    assert f(0) > 0  # the 1e-8 floor, not 0


def test_warmup_cosine_without_warmup_starts_at_full_rate():
    f = warmup_cosine(0, 4)
    hand = {0: 1.0, 1: 0.5 + math.sqrt(2) / 4, 2: 0.5, 3: 0.5 - math.sqrt(2) / 4, 4: 0.0}
    for step, want in hand.items():
        assert f(step) == pytest.approx(want, abs=1e-12), step


def test_the_schedule_drives_the_optimizer_learning_rate():
    """As the Engine wires it: LambdaLR(opt, warmup_cosine) multiplies the base lr by the factor."""
    p = torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.AdamW([p], lr=0.2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(4, 12))
    seen = []
    for _ in range(13):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    hand = [0.2 * 1e-8, 0.05, 0.1, 0.15, 0.2] + [0.2 * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(1, 9)]
    np.testing.assert_allclose(seen, hand, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------
# Parameter groups.


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 4)  # weight 2-D (decay), bias 1-D (no decay)
        self.norm = torch.nn.LayerNorm(4)  # weight and bias 1-D
        self.embed = torch.nn.Parameter(torch.zeros(5, 4, 2))  # 3-D: decay
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.0))  # 0-D scalar: no decay
        self.frozen = torch.nn.Linear(4, 4)
        for q in self.frozen.parameters():
            q.requires_grad_(False)


def test_param_groups_decay_only_matrices_and_skip_frozen():
    m = _Tiny()
    groups = param_groups(m, 0.1)
    decay = {id(m.proj.weight), id(m.embed)}
    no_decay = {id(m.proj.bias), id(m.norm.weight), id(m.norm.bias), id(m.logit_scale)}
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert {id(p) for p in groups[0]["params"]} == decay and len(groups[0]["params"]) == 2
    assert {id(p) for p in groups[1]["params"]} == no_decay and len(groups[1]["params"]) == 4
    # The frozen layer is in neither group.
    frozen = {id(p) for p in m.frozen.parameters()}
    assert not frozen & {id(p) for g in groups for p in g["params"]}


def test_param_groups_drop_empty_groups():
    only_vectors = torch.nn.Module()
    only_vectors.b = torch.nn.Parameter(torch.zeros(3))
    only_vectors.s = torch.nn.Parameter(torch.tensor(1.0))
    groups = param_groups(only_vectors, 0.05)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0 and len(groups[0]["params"]) == 2

    only_matrix = torch.nn.Linear(3, 2, bias=False)
    groups = param_groups(only_matrix, 0.05)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.05 and groups[0]["params"][0] is only_matrix.weight

    # AdamW accepts the groups and applies decay only where it was asked for.
    m = _Tiny()
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(1.0)
    opt = torch.optim.AdamW(param_groups(m, 0.5), lr=0.1)
    for p in m.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    opt.step()  # zero gradients: only decoupled weight decay moves a parameter, by lr·wd
    assert torch.allclose(m.proj.weight, torch.full_like(m.proj.weight, 1 - 0.1 * 0.5))
    assert torch.allclose(m.proj.bias, torch.ones_like(m.proj.bias))
    assert float(m.logit_scale.detach()) == 1.0


# ---------------------------------------------------------------------------------------
# Image-cluster bootstrap (§10).


def _ref_percentile(sorted_xs: list[float], q: float) -> float:
    """Linear interpolation at position (n−1)q, spelled out."""
    pos = (len(sorted_xs) - 1) * q
    below = math.floor(pos)
    above = math.ceil(pos)
    return sorted_xs[below] * (above - pos) + sorted_xs[above] * (pos - below) if above != below else sorted_xs[below]


def _ref_cluster_bootstrap(values_by_image: dict[str, list[float]], n: int, seed: int = 42):
    """§10: draw |images| image ids with replacement from random.Random(seed) (ids in sorted
    order); the statistic is the mean over all rows of the drawn images; CI = 2.5/97.5% at (n−1)q."""
    ids = sorted(values_by_image)
    rows = [v for i in ids for v in values_by_image[i]]
    rng = random.Random(seed)
    stats = []
    for _ in range(n):
        drawn = [rng.choice(ids) for _ in range(len(ids))]
        vals = [v for i in drawn for v in values_by_image[i]]
        stats.append(100.0 * sum(vals) / len(vals))
    stats.sort()
    return 100.0 * sum(rows) / len(rows), _ref_percentile(stats, 0.025), _ref_percentile(stats, 0.975)


def _ref_row_bootstrap(values_by_image: dict[str, list[float]], n: int, seed: int = 42):
    """What a row-level bootstrap would give (the wrong unit): for contrast only."""
    rows = [v for i in sorted(values_by_image) for v in values_by_image[i]]
    rng = random.Random(seed)
    stats = sorted(100.0 * sum(rng.choice(rows) for _ in rows) / len(rows) for _ in range(n))
    return _ref_percentile(stats, 0.025), _ref_percentile(stats, 0.975)


def test_percentile_interpolates_at_n_minus_1_times_q():
    xs = [0.0, 10.0, 20.0, 40.0, 80.0]
    # positions: 4·0.025 = 0.1, 4·0.5 = 2, 4·0.975 = 3.9, 4·0.3 = 1.2
    assert percentile(xs, 0.025) == pytest.approx(1.0)
    assert percentile(xs, 0.5) == pytest.approx(20.0)
    assert percentile(xs, 0.975) == pytest.approx(76.0)
    assert percentile(xs, 0.3) == pytest.approx(12.0)
    assert percentile(xs, 1.0) == 80.0 and percentile(xs, 0.0) == 0.0
    assert percentile([7.0], 0.975) == 7.0
    # NumPy's "linear" method is the same (n−1)q rule.
    rng = np.random.default_rng(0)
    ys = sorted(rng.normal(size=1000).tolist())
    for q in (0.025, 0.975, 0.123):
        assert percentile(ys, q) == pytest.approx(float(np.percentile(ys, 100 * q, method="linear")), abs=1e-12)


def test_bootstrap_resamples_images_not_rows():
    """One image with 50 rows, all 1, beside 19 images with one row of 0 each. Resampling images,
    the big image is missing from a draw about (19/20)^20 ≈ 36% of the time (statistic 0), so the
    lower end is 0; resampling rows would give a narrow interval around 72%."""
    per_image = {"big": [1.0] * 50, **{f"small{i:02d}": [0.0] for i in range(19)}}
    want = _ref_cluster_bootstrap(per_image, n=1000)
    got = bootstrap_ci(per_image, n=1000, seed=42)
    assert got == pytest.approx(want, abs=1e-9)
    assert got[0] == pytest.approx(100 * 50 / 69)
    assert got[1] == pytest.approx(0.0, abs=1e-9)  # cluster draws without the big image
    # The case discriminates: rows-resampling is visibly different.
    row_lo, row_hi = _ref_row_bootstrap(per_image, n=1000)
    assert row_lo > 55 and row_hi < 90 and abs(row_lo - got[1]) > 50


def test_bootstrap_matches_the_reference_draw_for_draw():
    """Uneven row counts, fractional scores, n chosen so (n−1)q falls between two draws."""
    rng = random.Random(7)
    per_image = {f"img{i:03d}": [round(rng.random(), 3) for _ in range(rng.choice([1, 1, 2, 4, 12]))]
                 for i in range(37)}
    for n in (1000, 201, 11):
        got = bootstrap_ci(per_image, n=n, seed=42)
        assert got == pytest.approx(_ref_cluster_bootstrap(per_image, n=n, seed=42), abs=1e-9), n
    # Images are drawn from their sorted ids: the order rows arrive in changes nothing.
    shuffled = list(per_image.items())
    random.Random(0).shuffle(shuffled)
    assert bootstrap_ci(dict(shuffled), n=1000, seed=42) == pytest.approx(_ref_cluster_bootstrap(per_image, n=1000))
    # The seed is honoured (a different generator gives a different interval).
    assert bootstrap_ci(per_image, n=200, seed=1) == pytest.approx(_ref_cluster_bootstrap(per_image, n=200, seed=1))
    assert bootstrap_ci(per_image, n=200, seed=1) != bootstrap_ci(per_image, n=200, seed=42)


def test_every_metric_gets_a_fresh_generator_seeded_42():
    """§10: the same seed for every group and metric: two metrics with equal values per image get
    equal intervals, each the reference's with Random(42)."""
    rng = random.Random(3)
    values = {f"i{i}": [float(rng.random() < 0.3) for _ in range(rng.randint(1, 5))] for i in range(25)}
    rows = [{"sample_id": sid, "task": "caption", "scores": {"m1": v, "m2": v}} for sid, vs in values.items() for v in vs]
    agg = aggregate(rows, n_boot=300)
    mean, lo, hi = _ref_cluster_bootstrap(values, n=300, seed=42)
    for m in ("m1", "m2"):
        assert agg[m]["mean"] == pytest.approx(mean) and agg[m]["ci"] == pytest.approx([lo, hi], abs=1e-9), m
        assert agg[m]["n"] == sum(len(v) for v in values.values()) and agg[m]["images"] == 25
