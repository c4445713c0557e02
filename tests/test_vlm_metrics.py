import random

import pytest

from fusionrs.config.train import VLM_SETTINGS as SETTINGS
from fusionrs.eval.vlm_metrics import (
    aggregate,
    bootstrap_ci,
    cue_coverage,
    lexical_f1,
    normalize_answer,
    object_f1,
    percentile,
    rouge_l,
    scene_em,
    score_row,
    table5,
)
from fusionrs.train.vlm.instructions import (
    INSTRUCTIONS,
    cue_phrases,
    instruction_rows,
    objects_in,
    responses,
    scene_label,
)

WORDS = "the a bright dark runway road trees river contrast grayscale outline of in with and two 3 planes".split()


def test_rouge_l_agrees_with_rouge_score_without_stemming():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(0)
    for _ in range(300):
        pred = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12)))
        ref = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
        want = scorer.score(ref, pred)["rougeL"].fmeasure
        assert rouge_l(pred, [ref]) == pytest.approx(want), (pred, ref)


def test_rouge_l_takes_the_best_reference_and_is_zero_when_empty():
    assert rouge_l("a bright runway", ["dark river", "a bright runway"]) == 1.0
    assert rouge_l("", ["a bright runway"]) == 0.0
    assert rouge_l("a bright runway", []) == 0.0


def test_lexical_f1_drops_stopwords_and_counts_multisets():
    # pred tokens without stopwords: bright, bright, runway; ref: bright, runway, road
    assert lexical_f1("the bright bright runway", ["a bright runway and a road"]) == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert lexical_f1("the of and", ["the of"]) == 0.0


def test_scene_exact_match_with_synonyms_and_normalisation():
    assert normalize_answer("The Harbour.") == "harbour"
    assert scene_em("Harbour.", "harbor") == 1.0
    assert scene_em("a parking area", "parking lot") == 1.0
    assert scene_em("residential area", "medium residential") == 1.0
    assert scene_em("forest", "harbor") == 0.0
    assert scene_em("", "harbor") == 0.0


def test_object_f1_over_canonical_objects():
    assert object_f1("planes, runway and some cars", "airplane, runway, vehicle") == 1.0
    assert object_f1("runway", "airplane, runway") == pytest.approx(2 / 3)
    assert object_f1("nothing useful", "runway") == 0.0


def test_cue_coverage_counts_the_reference_families():
    ref = "bright roofs, dark low-texture fields and clear outlines"  # bright, dark, outline
    assert cue_coverage("bright structures and sharp outlines", ref) == pytest.approx(2 / 3)
    assert cue_coverage("high contrast", "no cue words here") == pytest.approx(1 / 5)


def test_failed_generation_stays_in_the_denominator():
    rows = [{"sample_id": "a", "task": "caption", "scores": score_row("caption", "bright runway", ["bright runway"])},
            {"sample_id": "b", "task": "caption", "scores": score_row("caption", "", ["bright runway"])}]
    agg = aggregate(rows, n_boot=50)
    assert agg["rouge_l"]["mean"] == pytest.approx(50.0) and agg["rouge_l"]["n"] == 2
    assert agg["cap_ir"]["mean"] == pytest.approx(50.0)  # "bright" is an official IR-cue word


def test_bootstrap_ci_brackets_the_mean_and_matches_percentile_rule():
    rng = random.Random(1)
    per_image = {f"img{i}": [float(rng.random() < 0.4) for _ in range(rng.randint(1, 3))] for i in range(80)}
    mean, lo, hi = bootstrap_ci(per_image, n=1000)
    assert lo < mean < hi and hi - lo < 40
    constant = {f"i{i}": [1.0] for i in range(10)}
    assert bootstrap_ci(constant, n=100) == (100.0, 100.0, 100.0)
    assert percentile([0.0, 10.0], 0.25) == 2.5  # linear at (n−1)q


def test_table5_layout():
    rows = [{"sample_id": "a", "task": t, "scores": score_row(t, p, r)} for t, p, r in [
        ("caption", "bright runway", ["a bright runway"]), ("scene", "airport", ["airport"]),
        ("object", "runway", ["runway"]), ("ir_cue", "bright", ["bright"])]]
    md = table5({"B-iraware": aggregate(rows, n_boot=10)})
    assert "| Setting | Cap. Auto | Cap. IR | Cap. R-L | IR-cue QA | Obj. QA | Scene QA |" in md
    assert "| B-iraware | " in md and "100.00 [100.00, 100.00]" in md


def test_instruction_rows_per_setting():
    batch = {"sample_id": ["s1", "s2"], "source": ["NWPU", "RSICD"], "class_name": ["airport", None],
             "caption": ["two planes beside the runway", "a river flows between trees"],
             "ir_aware_caption": ["Two planes beside the runway, seen in grayscale: bright planes and dark grass.",
                                  "A river between trees with dark water and bright, textured banks."],
             "ir_jpeg": [b"x", b"y"]}
    a = instruction_rows(batch, "A-original")
    b = instruction_rows(batch, "B-iraware")
    c = instruction_rows(batch, "C-mixed")
    assert "ir_cue" not in a["task"] and b["task"].count("ir_cue") == 2
    assert len(c["task"]) == len(a["task"]) + len(b["task"])
    assert c["task"].count("caption") == 2 * a["task"].count("caption")
    i = a["task"].index("caption")
    assert a["response"][i] == "two planes beside the runway" and a["instruction"][i] == INSTRUCTIONS["caption"]
    assert b["response"][b["task"].index("caption")].startswith("Two planes")
    assert a["response"][a["task"].index("scene")] == "airport"  # the class name wins
    assert scene_label(None, "a river flows between trees") == "river"  # derived: river before forest
    assert objects_in("Two planes beside the runway") == ["airplane", "runway"]
    assert cue_phrases(batch["ir_aware_caption"][0]) == ["seen in grayscale", "bright planes", "dark grass"]
    assert responses({"caption": "", "ir_aware_caption": "", "class_name": None}, "B-iraware")["scene"] is None
    assert set(SETTINGS) == {"A-original", "B-iraware", "C-mixed"}
    # Without the image column (how training counts its rows) the rows are the same, minus the images.
    text_only = instruction_rows({k: v for k, v in batch.items() if k != "ir_jpeg"}, "C-mixed")
    assert text_only == {k: v for k, v in c.items() if k != "ir_jpeg"} and c["ir_jpeg"][0] == b"x"
