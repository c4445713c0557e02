"""VLM output audit and the paired comparison of two models' predictions.

    python -c "import json; from fusionrs.eval.audit import audit_outputs; \
        print(json.dumps(audit_outputs([json.loads(l) for l in open('preds.jsonl')]), indent=2))"

Both follow the official audit_fusionrs_vlm_outputs.py and compare_fusionrs_vlm_predictions.py
(official implementation §10 "Output audit", "Paired comparison"). Prediction rows carry the
official fields: record_key, evaluation_type (caption | vqa), task_type (captions),
question_type (VQA), benchmark_id (the image), prediction, status, references (captions),
accepted_answers / canonical_answer (VQA).

Output audit (success rows only): the official word lists (IR cues, physical-claim words and
phrases, RGB colours, generic failures) are looked up in the token set, phrases and failure
strings in the normalized text (`[a-z0-9]+` tokens joined by single spaces) — as the official
script does, so "can't describe" and "i'm sorry" can never match (their apostrophes are gone).
Rates are fractions in [0, 1], as the official report.

Paired comparison: both lists must hold the same record_keys, each once, all successful, with
the same benchmark_id / evaluation_type / task_type / question_type per key; per row candidate −
baseline of each score, then the image-cluster bootstrap (1,000 draws, Random(42)) of the mean.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from fusionrs.core.lexicon import OFFICIAL_IR_CUE_WORDS, OFFICIAL_RGB_COLOR_WORDS
from fusionrs.eval.vlm_metrics import (
    GENERATION_OK,
    GENERIC_FAILURES,
    PHYSICAL_PHRASES,
    PHYSICAL_WORDS,
    bag_f1,
    bootstrap_ci,
    lexical_f1,
    normalize_answer,
    rouge_l,
    tokens,
)

# "success" is the official prediction files' status; GENERATION_OK ("ok") is this project's.
SUCCESS_STATUSES = frozenset({"success", GENERATION_OK})
SEMANTIC, IR_OBSERVABLE = "semantic_description", "ir_observable_description"
PAIR_FIELDS = ("benchmark_id", "evaluation_type", "task_type", "question_type")


def is_success(row: dict) -> bool:
    return row.get("status") in SUCCESS_STATUSES


def prediction_of(row: dict) -> str:
    """The text to score: the prediction of a successful row, "" otherwise (a failed generation
    stays in the denominator as a wrong answer)."""
    return str(row.get("prediction") or "") if is_success(row) else ""


def normalized(text: str) -> str:
    return " ".join(tokens(text))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def audit_captions(rows: list[dict]) -> dict:
    preds = [normalized(r.get("prediction") or "") for r in rows]
    sets = [set(p.split()) for p in preds]
    words = [len(p.split()) for p in preds]
    counts = Counter(preds)
    return {
        "rows": len(rows),
        "images": len({r["benchmark_id"] for r in rows}),
        "empty_rate": _mean([float(not p) for p in preds]),
        "generic_failure_rate": _mean([float(any(g in p for g in GENERIC_FAILURES)) for p in preds]),
        "ir_cue_rate": _mean([float(bool(s & OFFICIAL_IR_CUE_WORDS)) for s in sets]),
        "unsupported_physical_claim_rate": _mean(
            [float(bool(s & PHYSICAL_WORDS) or any(ph in p for ph in PHYSICAL_PHRASES)) for s, p in zip(sets, preds)]),
        "rgb_color_term_rate": _mean([float(bool(s & OFFICIAL_RGB_COLOR_WORDS)) for s in sets]),
        "average_words": round(_mean([float(w) for w in words]), 4),
        "short_output_rate_le_15": _mean([float(w <= 15) for w in words]),
        "long_output_rate_ge_25": _mean([float(w >= 25) for w in words]),
        "unique_prediction_rate": len(counts) / max(1, len(rows)),
        "most_common_prediction_rate": max(counts.values()) / len(rows) if rows else 0.0,
        "exact_reference_copy_rate": _mean(
            [float(p in {normalized(ref) for ref in r.get("references") or []}) for r, p in zip(rows, preds)]),
    }


def audit_vqa(rows: list[dict]) -> dict:
    preds = [normalized(r.get("prediction") or "") for r in rows]
    words = [len(p.split()) for p in preds]
    presence = [p for r, p in zip(rows, preds) if r.get("question_type") == "object_presence"]
    return {
        "rows": len(rows),
        "images": len({r["benchmark_id"] for r in rows}),
        "empty_rate": _mean([float(not p) for p in preds]),
        "generic_failure_rate": _mean([float(any(g in p for g in GENERIC_FAILURES)) for p in preds]),
        "average_words": round(_mean([float(w) for w in words]), 4),
        "short_answer_rate_le_5": _mean([float(w <= 5) for w in words]),
        "exact_accepted_answer_rate": _mean(
            [float(p in {normalized(a) for a in (r.get("accepted_answers") or [r.get("canonical_answer", "")])})
             for r, p in zip(rows, preds)]),
        # Over the group's presence questions (the official script decides by the group's first row).
        "yes_no_format_rate": _mean([float(p in ("yes", "no")) for p in presence]) if presence else None,
    }


def audit_outputs(rows: list[dict]) -> dict:
    """The official audit report over the successful rows of one model's predictions."""
    ok = [r for r in rows if is_success(r)]
    caption = [r for r in ok if r.get("evaluation_type") == "caption"]
    vqa = [r for r in ok if r.get("evaluation_type") == "vqa"]
    by_task = {t: audit_captions([r for r in caption if r["task_type"] == t])
               for t in sorted({r["task_type"] for r in caption})}
    per_image: dict[str, dict[str, str]] = {}
    for r in caption:
        per_image.setdefault(r["benchmark_id"], {})[r["task_type"]] = normalized(r.get("prediction") or "")
    paired = [t for t in per_image.values() if SEMANTIC in t and IR_OBSERVABLE in t]
    both = SEMANTIC in by_task and IR_OBSERVABLE in by_task
    return {
        "input_rows": len(rows),
        "success_rows": len(ok),
        "caption": {
            "overall": audit_captions(caption),
            "by_task": by_task,
            "paired_images": len(paired),
            "identical_across_prompts_rate": _mean([float(t[SEMANTIC] == t[IR_OBSERVABLE]) for t in paired]),
            "ir_cue_prompt_delta": by_task[IR_OBSERVABLE]["ir_cue_rate"] - by_task[SEMANTIC]["ir_cue_rate"]
            if both else None,
            "length_prompt_delta": by_task[IR_OBSERVABLE]["average_words"] - by_task[SEMANTIC]["average_words"]
            if both else None,
        },
        "vqa": {"overall": audit_vqa(vqa),
                "by_type": {t: audit_vqa([r for r in vqa if r["question_type"] == t])
                            for t in sorted({r["question_type"] for r in vqa})}},
    }


# -- paired comparison ------------------------------------------------------------------------
def official_row_scores(row: dict) -> dict[str, float]:
    """The official per-row scores: ROUGE-L and lexical F1 for captions; exact match and token F1
    against accepted_answers (else canonical_answer) for VQA."""
    pred = prediction_of(row)
    if row["evaluation_type"] == "caption":
        refs = row.get("references") or []
        return {"rouge_l": rouge_l(pred, refs), "lexical_f1": lexical_f1(pred, refs)}
    accepted = row.get("accepted_answers") or [row["canonical_answer"]]
    p = normalize_answer(pred)
    return {"exact_match": float(p in {normalize_answer(a) for a in accepted}),
            "token_f1": max(bag_f1(tokens(p), tokens(normalize_answer(a))) for a in accepted)}


def _by_key(rows: list[dict], name: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for i, r in enumerate(rows):
        key = r.get("record_key")
        if not isinstance(key, str) or not key:
            raise ValueError(f"{name} row {i}: empty record_key")
        if key in out:
            raise ValueError(f"{name} row {i}: duplicate record_key {key!r}")
        if not is_success(r):
            raise ValueError(f"{name} row {i} ({key}): status {r.get('status')!r}, not a successful prediction")
        out[key] = r
    return out


def paired_differences(baseline: list[dict], candidate: list[dict],
                       score: Callable[[dict], dict[str, float]] = official_row_scores) -> list[dict]:
    """Per record_key: the candidate row with `diff` = {metric: candidate − baseline}; sorted by key."""
    base, cand = _by_key(baseline, "baseline"), _by_key(candidate, "candidate")
    if set(base) != set(cand):
        only_b, only_c = sorted(set(base) - set(cand)), sorted(set(cand) - set(base))
        raise ValueError(f"record_key sets differ: {len(only_b)} only in baseline {only_b[:3]}, "
                         f"{len(only_c)} only in candidate {only_c[:3]}")
    out = []
    for key in sorted(base):
        b, c = base[key], cand[key]
        for field in PAIR_FIELDS:
            if b.get(field) != c.get(field):
                raise ValueError(f"{key}: mismatched {field} ({b.get(field)!r} vs {c.get(field)!r})")
        sb, sc = score(b), score(c)
        out.append({**c, "diff": {m: sc[m] - sb[m] for m in sc}})
    return out


def _bootstrap_diff(rows: list[dict], metric: str, n_boot: int, seed: int) -> dict:
    by_image: dict[str, list[float]] = {}
    for r in rows:
        by_image.setdefault(r["benchmark_id"], []).append(r["diff"][metric])
    mean, lo, hi = bootstrap_ci(by_image, n_boot, seed)
    return {"candidate_minus_baseline": round(mean, 4), "ci95": [round(lo, 4), round(hi, 4)],
            "images": len(by_image), "rows": len(rows)}


def paired_comparison(baseline: list[dict], candidate: list[dict],
                      score: Callable[[dict], dict[str, float]] = official_row_scores,
                      n_boot: int = 1000, seed: int = 42) -> dict:
    """{evaluation_type: {overall, by_task | by_type}} of {metric: candidate − baseline ×100 with
    the image-cluster bootstrap 95% CI}. `score` gives a row's metrics (default: the official
    caption/VQA scores; hit_uav.row_scores for HIT-UAV)."""
    paired = paired_differences(baseline, candidate, score)
    report: dict = {}
    for etype in sorted({r["evaluation_type"] for r in paired}):
        rows = [r for r in paired if r["evaluation_type"] == etype]
        group_field, group_name = ("task_type", "by_task") if etype == "caption" else ("question_type", "by_type")
        metrics = list(rows[0]["diff"])

        def summarize(group: list[dict]) -> dict:
            return {m: _bootstrap_diff(group, m, n_boot, seed) for m in metrics}

        report[etype] = {"overall": summarize(rows),
                         group_name: {g: summarize([r for r in rows if r.get(group_field) == g])
                                      for g in sorted({r.get(group_field) for r in rows}, key=str)}}
    return report
