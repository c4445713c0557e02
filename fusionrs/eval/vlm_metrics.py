"""Generative metrics for IR captioning and the three VQA tasks, with image-level bootstrap CIs.

Definitions follow the official scorer (official implementation §10) where it has one:
- tokens: `[a-z0-9]+` of the lower-cased text;
- ROUGE-L: LCS F1 with β=1, no stemming, 0 if either side is empty, max over references;
- lexical F1: multiset F1 without the official stopwords, max over references;
- Cap. IR: share of captions whose tokens include an official IR-cue word (its output audit);
- bootstrap: resample images with replacement (1,000 draws, `random.Random(42)`), the statistic
  is the mean over all rows of the drawn images, CI ends are linear-interpolated 2.5/97.5%.
The paper does not define its columns; where the official code has nothing, ours are:
- Scene QA: normalized exact match after mapping synonyms onto one label (instructions.SCENE_SYNONYMS);
- Object QA: set F1 between the canonical objects named in the answer and in the reference;
- IR-cue QA: cue coverage = share of the reference's cue families (intensity, contrast, bright,
  dark/low-texture, outline) that the answer names; all five when the reference names none;
- Cap. Auto: mean of ROUGE-L, lexical F1 and "clean" (non-empty, no refusal, no physical
  overclaim, no RGB colour) — a composite of automatic caption checks, not the paper's number.
A failed generation is scored as an empty prediction: it stays in the denominator.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter

from fusionrs.core.lexicon import OFFICIAL_IR_CUE_WORDS, RGB_COLOR_WORDS
from fusionrs.train.vlm.instructions import CUE_FAMILIES, canonical_scene, cue_families, objects_in

GENERATION_OK = "ok"  # the status of a prediction that was generated (eval/vlm_eval.py)
STOPWORDS = frozenset("a an the and are as at be by for from in is it of on or that this to with".split())
PHYSICAL_WORDS = frozenset("""reflectivity reflective emissivity emissive material materials metallic conductivity
conductive absorptivity radiance radiant heat heated hot cold temperature temperatures""".split())
PHYSICAL_PHRASES = ("different materials", "material properties", "material property", "material response",
                    "surface properties", "surface property", "thermal anomaly", "heat signature", "heat signatures")
GENERIC_FAILURES = ("unable to", "cannot describe", "can't describe", "no image", "as an ai", "i cannot",
                    "i'm sorry", "i am sorry")
TABLE5 = [("Cap. Auto", "caption", "cap_auto"), ("Cap. IR", "caption", "cap_ir"), ("Cap. R-L", "caption", "rouge_l"),
          ("IR-cue QA", "ir_cue", "cue_coverage"), ("Obj. QA", "object", "object_f1"), ("Scene QA", "scene", "scene_em")]


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", (text or "").lower())


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(pred: str, refs: list[str]) -> float:
    p = tokens(pred)
    best = 0.0
    for ref in refs:
        r = tokens(ref)
        if not p or not r:
            continue
        lcs = _lcs(p, r)
        if lcs:
            prec, rec = lcs / len(p), lcs / len(r)
            best = max(best, 2 * prec * rec / (prec + rec))
    return best


def bag_f1(p: list[str], r: list[str]) -> float:
    common = sum((Counter(p) & Counter(r)).values())
    if not p or not r or not common:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def lexical_f1(pred: str, refs: list[str]) -> float:
    p = [t for t in tokens(pred) if t not in STOPWORDS]
    return max((bag_f1(p, [t for t in tokens(r) if t not in STOPWORDS]) for r in refs), default=0.0)


def normalize_answer(text: str) -> str:
    t = (text or "").lower()
    t = t.translate(str.maketrans({c: " " for c in string.punctuation}))
    return " ".join(w for w in t.split() if w not in ("a", "an", "the"))


def scene_em(pred: str, label: str) -> float:
    p = normalize_answer(pred)
    return float(bool(p) and canonical_scene(p) == canonical_scene(label))


def object_f1(pred: str, ref: str) -> float:
    p, r = set(objects_in(pred)), set(objects_in(ref))
    if not p or not r:
        return 0.0
    common = len(p & r)
    return 0.0 if not common else 2 * common / (len(p) + len(r))


def cue_coverage(pred: str, ref: str) -> float:
    want = cue_families(ref) or set(CUE_FAMILIES)
    return len(cue_families(pred) & want) / len(want)


def has_ir_cue(pred: str) -> float:
    return float(bool(set(tokens(pred)) & OFFICIAL_IR_CUE_WORDS))


def is_clean(pred: str) -> float:
    text = (pred or "").lower()
    ws = set(tokens(text))
    bad = (not ws or ws & PHYSICAL_WORDS or ws & RGB_COLOR_WORDS or any(p in text for p in PHYSICAL_PHRASES)
           or any(g in text for g in GENERIC_FAILURES))
    return float(not bad)


def score_row(task: str, pred: str, refs: list[str]) -> dict[str, float]:
    """Per-row scores (0..1). refs: the references of the row's task, best first."""
    if task == "caption":
        rl, lf = rouge_l(pred, refs), lexical_f1(pred, refs)
        return {"rouge_l": rl, "lexical_f1": lf, "cap_ir": has_ir_cue(pred),
                "cap_auto": (rl + lf + is_clean(pred)) / 3}
    if task == "scene":
        return {"scene_em": max(scene_em(pred, r) for r in refs)}
    if task == "object":
        return {"object_f1": max(object_f1(pred, r) for r in refs)}
    if task == "ir_cue":
        return {"cue_coverage": max(cue_coverage(pred, r) for r in refs)}
    raise ValueError(f"unknown task {task!r}")


def percentile(sorted_xs: list[float], q: float) -> float:
    """Linear interpolation at position (n−1)q, as the official scorer."""
    pos = (len(sorted_xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def bootstrap_ci(values_by_image: dict[str, list[float]], n: int = 1000, seed: int = 42) -> tuple[float, float, float]:
    """(mean, lo, hi) ×100 of the row mean, with an image-cluster bootstrap 95% CI."""
    images = sorted(values_by_image)
    if not images:
        return float("nan"), float("nan"), float("nan")
    all_rows = [v for i in images for v in values_by_image[i]]
    mean = 100 * sum(all_rows) / len(all_rows)
    rng = random.Random(seed)  # a fresh generator per metric, as the official scorer
    stats = []
    for _ in range(n):
        draw = [values_by_image[images[rng.randrange(len(images))]] for _ in images]
        total, count = sum(sum(v) for v in draw), sum(len(v) for v in draw)
        stats.append(100 * total / count)
    stats.sort()
    return mean, percentile(stats, 0.025), percentile(stats, 0.975)


def aggregate(rows: list[dict], n_boot: int = 1000) -> dict:
    """rows: {sample_id, task, scores: {metric: value}} → {metric: {mean, ci: [lo, hi], n}}."""
    by_metric: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        for metric, v in r["scores"].items():
            by_metric.setdefault(metric, {}).setdefault(r["sample_id"], []).append(v)
    out = {}
    for metric, per_image in sorted(by_metric.items()):
        mean, lo, hi = bootstrap_ci(per_image, n_boot)
        out[metric] = {"mean": mean, "ci": [lo, hi], "n": sum(len(v) for v in per_image.values()),
                       "images": len(per_image)}
    return out


def table5(results: dict[str, dict], title: str = "") -> str:
    """Paper Table 5 layout: setting × (Cap. Auto, Cap. IR, Cap. R-L, IR-cue QA, Obj. QA, Scene QA),
    each cell mean [95% CI]."""
    head = "| Setting | " + " | ".join(name for name, _, _ in TABLE5) + " |"
    lines = [f"### {title}" if title else "", head, "|---" * (len(TABLE5) + 1) + "|"]
    for setting, agg in results.items():
        cells = []
        for _, _, metric in TABLE5:
            m = agg.get(metric)
            cells.append(f"{m['mean']:.2f} [{m['ci'][0]:.2f}, {m['ci'][1]:.2f}]" if m else "–")
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return "\n".join(line for line in lines if line)
