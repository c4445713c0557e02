"""CLIP on real thermal imagery, as pure functions over embeddings: HIT-UAV zero-shot object
presence, the HIT-UAV frozen-feature linear probe, and dual-modal (RGB+IR) fusion retrieval.

    python -c "import numpy as np; from fusionrs.eval.probe import average_precision; \
        print(average_precision(np.array([.9, .8, .7]), np.array([1, 0, 1])))"

The embeddings come from whichever CLIP the caller runs (a Ray Data pass in the evaluation job);
nothing here loads a model. Protocols follow the official eval_clip_hit_uav_object_presence.py,
eval_clip_hit_uav_linear_probe.py and eval_clip_dual_modal_fusion.py (official implementation
§7.2); docs/evaluation.md lists where this module differs and why.

- Zero-shot presence: each image scored against each class's text embedding (three templates,
  each encoded and L2-normalised, mean-pooled, renormalised). Per-class AP = mean precision at
  each positive's rank (score order, ties in image order); mAP over the classes with positives;
  top1_presence_hit = share of all images whose best-scoring class is one they contain.
- Linear probe: per class one LogisticRegression (liblinear, class_weight="balanced",
  max_iter 2000, random_state 42) on the train features; C from {0.01, 0.1, 1, 10} by val AP
  (scikit-learn's average_precision_score, as the official probe), ties to the C closest to 1
  in log scale, then the larger C; refit on train+val; test AP; mAP over the four classes.
- Fusion: fused = l2norm(α·rgb + (1−α)·ir); α ∈ {0, .25, .5, .75, 1} chosen by the val mean of
  image→text and text→image R@1/5/10 (single positive: the same row), ties to the α closest to
  0.5, then the smaller α; settings RGB-only, IR-only, RGB+IR-mean (α=.5), RGB+IR-val-selected.
Recalls are percentages (retrieval.py's convention); APs are fractions in [0, 1].
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from fusionrs.eval.hit_uav import HitUavImage
from fusionrs.eval.retrieval import KS, recall_at_k

# The official CLIP evaluations' class order (the VQA builder iterates hit_uav.CLASSES, sorted).
PRESENCE_CLASSES = ("person", "bicycle", "car", "other vehicle")
PRESENCE_TEMPLATES = ("a thermal infrared UAV image containing {}", "an aerial thermal image of {}",
                      "an infrared drone view with {}")
C_VALUES = (0.01, 0.1, 1.0, 10.0)
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def l2norm(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def presence_labels(images: Sequence[HitUavImage], classes: Sequence[str] = PRESENCE_CLASSES) -> np.ndarray:
    """(images, classes) 0/1: does the image have at least one box of the class."""
    return np.array([[int(any(b.cls == c for b in img.boxes)) for c in classes] for img in images],
                    dtype=np.int64).reshape(len(images), len(classes))


# -- zero-shot presence ------------------------------------------------------------------------
def average_precision(scores, labels) -> float | None:
    """Mean precision at the rank of each positive, ranks by descending score (ties keep the
    input order); None when there is no positive."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if labels.sum() <= 0:
        return None
    hits = labels[np.argsort(-scores, kind="stable")].astype(np.float64)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def class_text_embeddings(encode_text: Callable[[list[str]], np.ndarray],
                          classes: Sequence[str] = PRESENCE_CLASSES,
                          templates: Sequence[str] = PRESENCE_TEMPLATES) -> np.ndarray:
    """(classes, dim): each class's template prompts encoded by `encode_text` (any CLIP: a list of
    strings → an array of embeddings), each normalised, averaged, renormalised."""
    prompts = [t.format(c) for c in classes for t in templates]
    emb = l2norm(np.asarray(encode_text(prompts)))
    if emb.shape[0] != len(prompts):
        raise ValueError(f"encode_text returned {emb.shape[0]} embeddings for {len(prompts)} prompts")
    return l2norm(emb.reshape(len(classes), len(templates), -1).mean(axis=1))


def zero_shot_presence(image_emb, text_emb, labels, classes: Sequence[str] = PRESENCE_CLASSES) -> dict:
    """Per-class AP, mAP over the classes with positives, top1_presence_hit over all images."""
    labels = np.asarray(labels)
    if labels.shape != (len(image_emb), len(classes)) or len(text_emb) != len(classes):
        raise ValueError(f"shapes disagree: images {np.shape(image_emb)}, texts {np.shape(text_emb)}, "
                         f"labels {labels.shape}, {len(classes)} classes")
    sims = l2norm(image_emb) @ l2norm(text_emb).T
    per_class = [{"class_name": c, "ap": average_precision(sims[:, j], labels[:, j]),
                  "positives": int(labels[:, j].sum())} for j, c in enumerate(classes)]
    aps = [p["ap"] for p in per_class if p["ap"] is not None]
    top1 = sims.argmax(axis=1)
    return {"num_samples": len(labels), "classes": list(classes), "mAP": float(np.mean(aps)) if aps else 0.0,
            "top1_presence_hit": float(labels[np.arange(len(labels)), top1].sum() / max(1, len(labels))),
            "per_class": per_class}


# -- linear probe ------------------------------------------------------------------------------
def select_c(val_ap: dict[float, float]) -> float:
    """The C with the best val AP; ties: closest to 1 (in log10), then the larger C."""
    return max(val_ap, key=lambda c: (val_ap[c], -abs(math.log10(c)), c))


def _classifier(c: float, max_iter: int, seed: int) -> LogisticRegression:
    return LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter, solver="liblinear", random_state=seed)


def _check_labels(y: np.ndarray, split: str, cls: str) -> None:
    positives = int(y.sum())
    if split == "train" and not 0 < positives < len(y):
        raise ValueError(f"linear probe, class {cls!r}: train needs positives and negatives, has {positives}/{len(y)}")
    if split != "train" and positives == 0:
        raise ValueError(f"linear probe, class {cls!r}: no positive in {split}, AP is undefined")


def linear_probe(features: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                 classes: Sequence[str] = PRESENCE_CLASSES, c_values: Sequence[float] = C_VALUES,
                 max_iter: int = 2000, seed: int = 42) -> dict:
    """features/labels: {"train", "val", "test"} → (n, dim) features and (n, classes) 0/1 labels."""
    x = {s: np.asarray(features[s], dtype=np.float64) for s in ("train", "val", "test")}
    y = {s: np.asarray(labels[s]) for s in ("train", "val", "test")}
    for s in x:
        if y[s].shape != (len(x[s]), len(classes)):
            raise ValueError(f"linear probe: {s} labels {y[s].shape} vs features {x[s].shape}, {len(classes)} classes")
    x_fit, y_fit = np.concatenate([x["train"], x["val"]]), np.concatenate([y["train"], y["val"]])
    per_class = []
    for j, cls in enumerate(classes):
        for s in ("train", "val", "test"):
            _check_labels(y[s][:, j], s, cls)
        val_ap = {}
        for c in c_values:
            clf = _classifier(c, max_iter, seed).fit(x["train"], y["train"][:, j])
            val_ap[c] = float(average_precision_score(y["val"][:, j], clf.predict_proba(x["val"])[:, 1]))
        best = select_c(val_ap)
        clf = _classifier(best, max_iter, seed).fit(x_fit, y_fit[:, j])
        test_ap = float(average_precision_score(y["test"][:, j], clf.predict_proba(x["test"])[:, 1]))
        per_class.append({"class_name": cls, "selected_C": best, "val_ap": val_ap[best], "val_ap_by_C": val_ap,
                          "test_ap": test_ap, **{f"{s}_positives": int(y[s][:, j].sum()) for s in y}})
    return {"mAP": float(np.mean([p["test_ap"] for p in per_class])), "per_class": per_class}


# -- dual-modal fusion ---------------------------------------------------------------------------
def fuse(rgb, ir, alpha: float) -> np.ndarray:
    """l2norm(α·rgb + (1−α)·ir) of unit embeddings (normalised here, as the encoder returns them)."""
    return l2norm(alpha * l2norm(rgb) + (1.0 - alpha) * l2norm(ir))


def pair_recall(query, gallery) -> dict[str, float]:
    """R@1/5/10 (%) where query row i's only positive is gallery row i."""
    ids = np.arange(len(query))
    return {f"R@{k}": v for k, v in recall_at_k(query, gallery, ids, ids, KS).items()}


def image_text_recall(image, text) -> dict[str, dict[str, float]]:
    return {"image->text": pair_recall(image, text), "text->image": pair_recall(text, image)}


def mean_recall(metrics: dict[str, dict[str, float]]) -> float:
    values = [v for direction in metrics.values() for v in direction.values()]
    return sum(values) / max(1, len(values))


def select_alpha(val_mean_recall: dict[float, float]) -> float:
    """The α with the best val mean recall; ties: closest to 0.5, then the smaller α (the first
    in ascending order, as the official max over the sorted list)."""
    best = None
    for a in sorted(val_mean_recall):
        key = (val_mean_recall[a], -abs(a - 0.5))
        if best is None or key > best[0]:
            best = (key, a)
    return best[1]


def dual_modal_fusion(val: dict[str, np.ndarray], test: dict[str, np.ndarray],
                      alphas: Sequence[float] = ALPHAS) -> dict:
    """val/test: {"rgb", "ir", "text"} arrays aligned by row (one sample each)."""
    if any(not 0.0 <= a <= 1.0 for a in alphas) or not alphas:
        raise ValueError(f"fusion alphas must be within [0, 1], got {list(alphas)}")
    scores = {a: mean_recall(image_text_recall(fuse(val["rgb"], val["ir"], a), val["text"]))
              for a in sorted(set(alphas))}
    alpha = select_alpha(scores)
    settings = {"RGB-only": image_text_recall(test["rgb"], test["text"]),
                "IR-only": image_text_recall(test["ir"], test["text"]),
                "RGB+IR-mean": image_text_recall(fuse(test["rgb"], test["ir"], 0.5), test["text"]),
                "RGB+IR-val-selected": image_text_recall(fuse(test["rgb"], test["ir"], alpha), test["text"])}
    return {"selected_rgb_weight": alpha,
            "alpha_selection": [{"rgb_weight": a, "val_mean_recall": s} for a, s in scores.items()],
            "settings": {n: {"mean_recall": mean_recall(m), "metrics": m} for n, m in settings.items()},
            "cross_modal": {"RGB->IR": pair_recall(test["rgb"], test["ir"]),
                            "IR->RGB": pair_recall(test["ir"], test["rgb"])}}
