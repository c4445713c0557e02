"""CLIP real-thermal evaluations (probe.py), Caltech Aerial RGB-T (caltech.py), the VLM output
audit and the paired comparison (audit.py). References are computed in this file: brute-force
precision at rank and recall, scikit-learn fits, hand counts."""

from __future__ import annotations

import hashlib
import math
import random
import statistics

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from fusionrs.eval.audit import audit_outputs, paired_comparison
from fusionrs.eval.caltech import caltech_retrieval, read_caltech_pairs
from fusionrs.eval.hit_uav import Box, HitUavImage
from fusionrs.eval.hit_uav import row_scores as hit_uav_row_scores
from fusionrs.eval.probe import (
    average_precision,
    class_text_embeddings,
    dual_modal_fusion,
    fuse,
    linear_probe,
    presence_labels,
    select_alpha,
    select_c,
    zero_shot_presence,
)


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def brute_ap(scores, labels):
    """Precision at each positive's rank, averaged; ranks by descending score, ties by index."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    precisions, hits = [], 0
    for rank, i in enumerate(order, 1):
        if labels[i]:
            hits += 1
            precisions.append(hits / rank)
    return sum(precisions) / len(precisions) if precisions else None


def brute_pair_recall(q, g, k):
    """% of queries i whose gallery row i is among the top k by cosine (ties: lower index first)."""
    s = unit(q) @ unit(g).T
    hits = 0
    for i in range(len(q)):
        order = sorted(range(len(g)), key=lambda j: (-s[i, j], j))
        hits += i in order[:k]
    return 100 * hits / len(q)


# -- average precision and zero-shot presence ---------------------------------------------------
def test_average_precision_against_precision_at_rank():
    # By hand: ranks of the positives 1, 3, 4 → (1/1 + 2/3 + 3/4) / 3.
    assert average_precision([0.9, 0.8, 0.7, 0.6, 0.1], [1, 0, 1, 1, 0]) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert average_precision([0.5, 0.2], [0, 0]) is None
    # Ties keep the input order: the positive at index 2 ranks after both tied negatives.
    assert average_precision([0.5, 0.5, 0.5], [0, 0, 1]) == pytest.approx(1 / 3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        s, y = rng.normal(size=40).round(1), rng.integers(0, 2, 40)  # rounding makes ties
        assert average_precision(s, y) == pytest.approx(brute_ap(list(s), list(y)))


def test_zero_shot_presence_against_loops():
    rng = np.random.default_rng(1)
    img, txt = rng.normal(size=(30, 6)), rng.normal(size=(4, 6))
    labels = rng.integers(0, 2, (30, 4))
    labels[:, 3] = 0  # a class without positives is left out of the mAP
    got = zero_shot_presence(img, txt, labels)
    sims = unit(img) @ unit(txt).T
    aps = [brute_ap(list(sims[:, j]), list(labels[:, j])) for j in range(4)]
    assert [p["ap"] for p in got["per_class"]] == pytest.approx(aps[:3] + [None])
    assert got["per_class"][3]["ap"] is None and got["per_class"][3]["positives"] == 0
    assert got["mAP"] == pytest.approx(sum(aps[:3]) / 3)
    hits = sum(labels[i, max(range(4), key=lambda j: sims[i, j])] for i in range(30))
    assert got["top1_presence_hit"] == pytest.approx(hits / 30)


def test_class_text_embeddings_pool_the_official_templates():
    seen = []

    def vectors(texts):  # a deterministic stand-in text encoder: sha256 bytes → a vector
        return np.array([[b - 128 for b in hashlib.sha256(t.encode()).digest()[:8]] for t in texts], dtype=np.float32)

    def encode(texts):
        seen.extend(texts)
        return vectors(texts)

    emb = class_text_embeddings(encode)
    assert seen[:3] == ["a thermal infrared UAV image containing person", "an aerial thermal image of person",
                        "an infrared drone view with person"]
    assert seen[-1] == "an infrared drone view with other vehicle" and len(seen) == 12
    raw = vectors(seen)
    per_template = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    want = per_template.reshape(4, 3, 8).mean(axis=1)
    assert emb == pytest.approx(want / np.linalg.norm(want, axis=1, keepdims=True), abs=1e-6)
    assert np.linalg.norm(emb, axis=1) == pytest.approx(np.ones(4))


def test_presence_labels_follow_the_clip_class_order():
    imgs = [HitUavImage(1, "a.jpg", 10, 10, (Box("car", 0, 0, 1, 1), Box("other vehicle", 0, 0, 1, 1))),
            HitUavImage(2, "b.jpg", 10, 10, ())]
    assert presence_labels(imgs).tolist() == [[0, 0, 1, 1], [0, 0, 0, 0]]  # person, bicycle, car, other vehicle


# -- linear probe --------------------------------------------------------------------------------
def test_c_tie_rule():
    assert select_c({0.01: 0.8, 0.1: 0.9, 1.0: 0.85, 10.0: 0.7}) == 0.1  # the best AP wins
    assert select_c({0.01: 0.9, 0.1: 0.9, 1.0: 0.9, 10.0: 0.9}) == 1.0  # tie: closest to 1
    assert select_c({0.01: 0.5, 0.1: 0.9, 1.0: 0.5, 10.0: 0.9}) == 10.0  # 0.1 and 10 equally far: larger


def probe_data(seed=0, n=(60, 40, 40), dim=8):
    rng = np.random.default_rng(seed)
    out_x, out_y = {}, {}
    w = rng.normal(size=(dim, 4))
    for split, m in zip(("train", "val", "test"), n):
        x = rng.normal(size=(m, dim))
        y = (x @ w + rng.normal(scale=1.5, size=(m, 4)) > 0.3).astype(int)
        out_x[split], out_y[split] = x, y
    return out_x, out_y


def test_linear_probe_against_sklearn_fits_here():
    x, y = probe_data()
    got = linear_probe(x, y)
    cs = (0.01, 0.1, 1.0, 10.0)
    test_aps = []
    for j, p in enumerate(got["per_class"]):
        val = {}
        for c in cs:
            clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, solver="liblinear", random_state=42)
            val[c] = average_precision_score(y["val"][:, j], clf.fit(x["train"], y["train"][:, j]).predict_proba(x["val"])[:, 1])
        best_ap = max(val.values())
        tied = [c for c in cs if val[c] == best_ap]
        nearest = min(abs(math.log10(c)) for c in tied)
        want_c = max(c for c in tied if abs(math.log10(c)) == nearest)
        clf = LogisticRegression(C=want_c, class_weight="balanced", max_iter=2000, solver="liblinear", random_state=42)
        clf.fit(np.concatenate([x["train"], x["val"]]), np.concatenate([y["train"], y["val"]])[:, j])
        test_aps.append(average_precision_score(y["test"][:, j], clf.predict_proba(x["test"])[:, 1]))
        assert p["selected_C"] == want_c and p["val_ap"] == pytest.approx(best_ap)
        assert p["test_ap"] == pytest.approx(test_aps[-1])
    assert got["mAP"] == pytest.approx(np.mean(test_aps))


def test_linear_probe_ties_pick_c_one():
    # Validation perfectly separated by a wide margin on feature 0: every C reaches AP 1.0.
    x, y = probe_data(seed=3)
    y["val"] = np.repeat((x["val"][:, :1] > 0).astype(int), 4, axis=1)
    x["val"][:, 0] = np.where(y["val"][:, 0] == 1, 50.0, -50.0)
    x["train"][:, 0] = np.where(y["train"][:, 0] == 1, 50.0, -50.0)
    got = linear_probe(x, y)
    assert got["per_class"][0]["val_ap_by_C"] == {0.01: 1.0, 0.1: 1.0, 1.0: 1.0, 10.0: 1.0}
    assert got["per_class"][0]["selected_C"] == 1.0


def test_linear_probe_names_a_class_without_positives():
    x, y = probe_data()
    y["train"][:, 2] = 0
    with pytest.raises(ValueError, match="class 'car': train needs positives and negatives"):
        linear_probe(x, y)
    x, y = probe_data()
    y["test"][:, 1] = 0
    with pytest.raises(ValueError, match="class 'bicycle': no positive in test"):
        linear_probe(x, y)


# -- fusion --------------------------------------------------------------------------------------
def test_alpha_tie_rule():
    assert select_alpha({0.0: 10, 0.25: 50, 0.5: 40, 0.75: 50, 1.0: 5}) == 0.25  # equally far from .5: smaller
    assert select_alpha({0.0: 10, 0.25: 50, 0.5: 50, 0.75: 50, 1.0: 50}) == 0.5
    assert select_alpha({0.0: 60, 0.25: 50, 0.5: 50, 0.75: 50, 1.0: 50}) == 0.0


def test_fusion_selects_on_val_and_reports_test_settings():
    rng = np.random.default_rng(0)
    n, d = 40, 16

    def split():
        text = rng.normal(size=(n, d))
        # IR embeddings sit close to the text, RGB ones are noise: the more RGB, the worse.
        return {"text": text, "ir": text + 0.3 * rng.normal(size=(n, d)), "rgb": rng.normal(size=(n, d))}

    val, test = split(), split()
    got = dual_modal_fusion(val, test)
    val_scores = {}
    for a in (0.0, 0.25, 0.5, 0.75, 1.0):
        fused = unit(a * unit(val["rgb"]) + (1 - a) * unit(val["ir"]))
        val_scores[a] = np.mean([brute_pair_recall(fused, val["text"], k) for k in (1, 5, 10)]
                                + [brute_pair_recall(val["text"], fused, k) for k in (1, 5, 10)])
    assert [r["val_mean_recall"] for r in got["alpha_selection"]] == pytest.approx(list(val_scores.values()))
    # α = 0 and α = .25 both reach 100 on val: the tie goes to the α closer to 0.5.
    assert val_scores[0.0] == val_scores[0.25] == 100.0 > val_scores[0.5]
    assert got["selected_rgb_weight"] == 0.25
    assert fuse(test["rgb"], test["ir"], 0.25) == pytest.approx(unit(0.25 * unit(test["rgb"]) + 0.75 * unit(test["ir"])))
    for name, image in (("RGB-only", test["rgb"]), ("IR-only", test["ir"]),
                        ("RGB+IR-mean", unit(unit(test["rgb"]) + unit(test["ir"]))),
                        ("RGB+IR-val-selected", unit(0.25 * unit(test["rgb"]) + 0.75 * unit(test["ir"])))):
        want = {"image->text": {f"R@{k}": brute_pair_recall(image, test["text"], k) for k in (1, 5, 10)},
                "text->image": {f"R@{k}": brute_pair_recall(test["text"], image, k) for k in (1, 5, 10)}}
        setting = got["settings"][name]
        for direction in want:
            assert setting["metrics"][direction] == pytest.approx(want[direction]), (name, direction)
        assert setting["mean_recall"] == pytest.approx(np.mean([v for d_ in want.values() for v in d_.values()]))
    assert got["settings"]["RGB-only"]["mean_recall"] < got["settings"]["IR-only"]["mean_recall"]
    assert got["cross_modal"]["RGB->IR"] == pytest.approx({f"R@{k}": brute_pair_recall(test["rgb"], test["ir"], k)
                                                          for k in (1, 5, 10)})


# -- Caltech Aerial RGB-T --------------------------------------------------------------------------
def caltech_tree(root, n=4, drop=None):
    """The documented layout: <root>/<place>/{color,thermal8,masks}/, splits in <root>/splits."""
    rgb, thermal = [], []
    for i in range(n):
        for kind in ("color", "thermal8", "masks"):
            (root / "place" / kind).mkdir(parents=True, exist_ok=True)
            if (kind, i) != drop:
                (root / "place" / kind / f"f{i}.png").write_bytes(b"png")
        rgb.append(f"place/color/f{i}.png,place/masks/f{i}.png")
        thermal.append(f"place/thermal8/f{i}.png,place/masks/f{i}.png")
    (root / "splits").mkdir(exist_ok=True)
    (root / "splits" / "rgb_test.txt").write_text("\n".join(rgb) + "\n\n")
    (root / "splits" / "thermal8_test.txt").write_text("\n".join(reversed(thermal)) + "\n")  # other order: joined on the mask
    return root


def test_caltech_pairs_join_on_the_mask(tmp_path):
    root = caltech_tree(tmp_path)
    pairs = read_caltech_pairs(str(root), str(root / "splits"), "test")
    assert [p.sample_id for p in pairs] == ["f0", "f1", "f2", "f3"]  # the RGB file's order
    assert pairs[2].rgb == str(root / "place/color/f2.png") and pairs[2].thermal == str(root / "place/thermal8/f2.png")
    assert pairs[2].mask == str(root / "place/masks/f2.png")


def test_caltech_split_errors(tmp_path):
    root = caltech_tree(tmp_path / "a", drop=("thermal8", 1))
    with pytest.raises(FileNotFoundError, match=r"1 files of the test split missing.*thermal8/f1\.png"):
        read_caltech_pairs(str(root), str(root / "splits"))
    root = caltech_tree(tmp_path / "b")
    t = root / "splits" / "thermal8_test.txt"
    t.write_text(t.read_text().replace("masks/f0.png", "masks/f9.png"))
    with pytest.raises(ValueError, match=r"masks only in rgb \['place/masks/f0\.png'\], only in thermal \['place/masks/f9\.png'\]"):
        read_caltech_pairs(str(root), str(root / "splits"))
    t.write_text("place/thermal8/f0.png,place/masks/f0.png\nplace/thermal8/f1.png,place/masks/f0.png\n")
    with pytest.raises(ValueError, match=r"thermal8_test\.txt: mask 'place/masks/f0\.png' listed twice"):
        read_caltech_pairs(str(root), str(root / "splits"))
    t.write_text("place/thermal8/f0.png\n")
    with pytest.raises(ValueError, match=r"thermal8_test\.txt:1: expected 'image,mask'"):
        read_caltech_pairs(str(root), str(root / "splits"))
    t.write_text("../../etc/passwd,place/masks/f0.png\n")
    with pytest.raises(ValueError, match=r"thermal8_test\.txt:1: path must be relative"):
        read_caltech_pairs(str(root), str(root / "splits"))


def test_caltech_retrieval_is_the_mean_of_six_recalls():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(30, 8))
    rgb, thermal = base + 0.8 * rng.normal(size=base.shape), base + 0.8 * rng.normal(size=base.shape)
    got = caltech_retrieval(rgb, thermal)
    want = [brute_pair_recall(rgb, thermal, k) for k in (1, 5, 10)] + [brute_pair_recall(thermal, rgb, k) for k in (1, 5, 10)]
    assert [got["metrics"]["RGB->thermal"][f"R@{k}"] for k in (1, 5, 10)] == pytest.approx(want[:3])
    assert [got["metrics"]["thermal->RGB"][f"R@{k}"] for k in (1, 5, 10)] == pytest.approx(want[3:])
    assert got["mean_recall"] == pytest.approx(sum(want) / 6) and 0 < want[0] < 100


# -- output audit ------------------------------------------------------------------------------------
def cap(bid, task, text, status="success", refs=()):
    return {"evaluation_type": "caption", "benchmark_id": bid, "task_type": task, "prediction": text,
            "status": status, "references": list(refs)}


LONG = ("a dense residential area with many small houses arranged along narrow streets where different "
        "materials of the roofs appear in rows next to a large park with trees")  # 28 words


def test_caption_audit_on_a_hand_made_list():
    rows = [
        cap("A", "semantic_description", "A bright runway with dark grass."),
        cap("A", "ir_observable_description", "A bright runway with dark grass."),
        cap("B", "semantic_description", "Green trees near a beige roof and hot asphalt"),
        cap("B", "ir_observable_description", "I'm sorry, I cannot describe this image"),
        cap("C", "ir_observable_description", "thermal outline", status="error"),  # not audited
        cap("C", "semantic_description", LONG, refs=["Other text", LONG.upper() + "!"]),
        cap("D", "ir_observable_description", "I'm sorry"),  # normalized "i m sorry": no failure string matches
        cap("D", "semantic_description", "I'm sorry"),
        cap("E", "ir_observable_description", "Turquoise water with dark edges"),  # turquoise: not an official colour
    ]
    rep = audit_outputs(rows)
    assert rep["input_rows"] == 9 and rep["success_rows"] == 8
    o = rep["caption"]["overall"]
    assert o["rows"] == 8 and o["images"] == 5
    assert o["ir_cue_rate"] == pytest.approx(3 / 8)  # A twice ("bright", "dark"), E ("dark")
    assert o["unsupported_physical_claim_rate"] == pytest.approx(2 / 8)  # "hot"; "different materials"
    assert o["rgb_color_term_rate"] == pytest.approx(1 / 8)  # green, beige
    assert o["generic_failure_rate"] == pytest.approx(1 / 8)  # "i cannot" only in B's IR caption
    assert o["average_words"] == round((6 + 6 + 9 + 8 + 28 + 3 + 3 + 5) / 8, 4)
    assert o["short_output_rate_le_15"] == pytest.approx(7 / 8) and o["long_output_rate_ge_25"] == pytest.approx(1 / 8)
    assert o["unique_prediction_rate"] == pytest.approx(6 / 8) and o["most_common_prediction_rate"] == pytest.approx(2 / 8)
    assert o["exact_reference_copy_rate"] == pytest.approx(1 / 8)
    c = rep["caption"]
    assert c["paired_images"] == 3 and c["identical_across_prompts_rate"] == pytest.approx(2 / 3)  # A, D; not B
    # IR prompt: A and E of A, B, D, E have a cue; semantic: A of A, B, C, D.
    assert c["ir_cue_prompt_delta"] == pytest.approx(2 / 4 - 1 / 4)
    assert c["by_task"]["semantic_description"]["rows"] == 4
    assert c["length_prompt_delta"] == pytest.approx((6 + 8 + 3 + 5) / 4 - (6 + 9 + 28 + 3) / 4)


def test_vqa_audit_on_a_hand_made_list():
    def q(bid, qtype, text, accepted):
        return {"evaluation_type": "vqa", "benchmark_id": bid, "question_type": qtype, "prediction": text,
                "status": "success", "accepted_answers": accepted, "canonical_answer": accepted[0]}

    rows = [q("A", "object_presence", "Yes", ["yes"]), q("A", "object_presence", "no.", ["yes"]),
            q("B", "object_presence", "Yes, there is a car on the road", ["yes"]),
            q("B", "object_count", "two", ["2", "two"])]
    full = audit_outputs(rows)
    assert full["caption"]["ir_cue_prompt_delta"] is None and full["caption"]["overall"]["rows"] == 0
    rep = full["vqa"]
    assert rep["overall"]["short_answer_rate_le_5"] == pytest.approx(3 / 4)
    assert rep["overall"]["exact_accepted_answer_rate"] == pytest.approx(2 / 4)  # "Yes", "two"
    assert rep["overall"]["yes_no_format_rate"] == pytest.approx(2 / 3)  # over the presence rows
    assert rep["by_type"]["object_count"]["yes_no_format_rate"] is None
    assert rep["overall"]["average_words"] == round((1 + 1 + 8 + 1) / 4, 4)


# -- paired comparison ---------------------------------------------------------------------------------
def pred(key, bid, prediction, status="success", qtype="object_presence", canonical="yes"):
    return {"record_key": key, "benchmark_id": bid, "evaluation_type": "vqa", "question_type": qtype,
            "canonical_answer": canonical, "accepted_answers": [canonical], "prediction": prediction, "status": status}


def test_paired_comparison_rejects_mismatches():
    base = [pred("vqa:1", "A", "yes"), pred("vqa:2", "B", "no")]
    with pytest.raises(ValueError, match=r"record_key sets differ: 1 only in baseline \['vqa:2'\], 1 only in candidate \['vqa:3'\]"):
        paired_comparison(base, [pred("vqa:1", "A", "yes"), pred("vqa:3", "B", "no")])
    with pytest.raises(ValueError, match=r"vqa:2: mismatched benchmark_id \('B' vs 'C'\)"):
        paired_comparison(base, [pred("vqa:1", "A", "yes"), pred("vqa:2", "C", "no")])
    with pytest.raises(ValueError, match="vqa:2: mismatched question_type"):
        paired_comparison(base, [pred("vqa:1", "A", "yes"), pred("vqa:2", "B", "no", qtype="object_count")])
    with pytest.raises(ValueError, match=r"candidate row 1 \(vqa:2\): status 'error'"):
        paired_comparison(base, [pred("vqa:1", "A", "yes"), pred("vqa:2", "B", "", status="error")])
    with pytest.raises(ValueError, match="baseline row 1: duplicate record_key 'vqa:1'"):
        paired_comparison([base[0], base[0]], base)


def test_paired_differences_and_bootstrap():
    # HIT-UAV accuracy per row: baseline right on 1 and 4, candidate right on 1, 2, 3.
    base = [pred("k1", "A", "yes"), pred("k2", "A", "no"), pred("k3", "B", "maybe"), pred("k4", "C", "yes")]
    cand = [pred("k1", "A", "Yes."), pred("k2", "A", "yes"), pred("k3", "B", "yes!"), pred("k4", "C", "no")]
    for rows in (base, cand):
        for r in rows:
            r["question_id"] = r["record_key"]
    rep = paired_comparison(base, cand, score=hit_uav_row_scores, n_boot=300)["vqa"]
    diffs = {"A": [0.0, 1.0], "B": [1.0], "C": [-1.0]}
    got = rep["overall"]["accuracy"]
    assert got["candidate_minus_baseline"] == 25.0 and got["rows"] == 4 and got["images"] == 3
    rng, ids, draws = random.Random(42), sorted(diffs), []
    for _ in range(300):
        draws.append(statistics.fmean(v for i in (rng.choice(ids) for _ in ids) for v in diffs[i]))
    draws.sort()

    def pct(q):
        pos = (len(draws) - 1) * q
        lo = int(pos)
        return draws[lo] + (draws[min(lo + 1, len(draws) - 1)] - draws[lo]) * (pos - lo)

    assert got["ci95"] == pytest.approx([round(100 * pct(0.025), 4), round(100 * pct(0.975), 4)])
    assert rep["by_type"]["object_presence"]["accuracy"] == got
    # The default official scores (exact match on accepted_answers) differ: "Yes." counts, "yes!" too.
    official = paired_comparison(base, cand, n_boot=10)["vqa"]["overall"]["exact_match"]
    assert official["candidate_minus_baseline"] == 25.0
