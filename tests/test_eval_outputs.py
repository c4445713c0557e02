"""What evaluation writes and picks: per-source retrieval, zero-shot IR classification with the
tiny debug CLIP, the retrieval and VLM result files, and which checkpoints the CLIP export takes.

No Ray is started: `evaluate_clip` embeds through Ray Data, so its pieces are checked here on
embeddings made in the test (six_directions per source, zero_shot), and the writers on result
dicts built here. The checkpoint tests use real `ray.train.Checkpoint` directories inside a
`ray.train.Result` built with its public constructor (no Ray runtime needed for either).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fusionrs.core.storage import Storage

# ---------------------------------------------------------------------------------------
# Independent references.

KS = (1, 5, 10)
NAMES = {"ir": "IR", "rgb": "RGB", "text": "Text"}
TABLE4_HEADER = ("| Model | Mean R | IR→Text R@1/5/10 | Text→IR R@1/5/10 | RGB→IR R@1/5/10 | IR→RGB R@1/5/10 | "
                 "RGB→Text R@1/5/10 | Text→RGB R@1/5/10 | Mean (6 dirs) |")
TABLE5_HEADER = "| Setting | Cap. Auto | Cap. IR | Cap. R-L | IR-cue QA | Obj. QA | Scene QA |"
TEMPLATES = ("a thermal infrared image of a {} scene", "an infrared image of {}", "a low light thermal view of {}")  # §7.2


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _brute_recall(q: np.ndarray, g: np.ndarray, q_keys, g_keys) -> dict[int, float]:
    """R@K (%) by sorting every query's gallery (stable: ties to the lower index); a hit is any
    gallery item with the query's key among the first K."""
    sim = _unit(q) @ _unit(g).T
    out = {}
    for k in KS:
        hits = 0
        for i in range(len(q)):
            top = np.argsort(-sim[i], kind="stable")[:k]
            hits += any(g_keys[j] == q_keys[i] for j in top)
        out[k] = 100.0 * hits / len(q)
    return out


def _brute_six(emb: dict, ids: list, keys: list) -> dict:
    out = {}
    for a, b in (("ir", "text"), ("text", "ir"), ("rgb", "ir"), ("ir", "rgb"), ("rgb", "text"), ("text", "rgb")):
        k = keys if "text" in (a, b) else ids
        out[f"{NAMES[a]}->{NAMES[b]}"] = _brute_recall(emb[a], emb[b], k, k)
    four = ("IR->Text", "Text->IR", "RGB->IR", "IR->RGB")
    out["mean_r"] = float(np.mean([out[d][k] for d in four for k in KS]))
    out["mean_all"] = float(np.mean([out[d][k] for d in out if "->" in d for k in KS]))
    return out


def _json_keys(x):
    """What JSON does to a dict: every key becomes a string (R@K's int keys too)."""
    if isinstance(x, dict):
        return {str(k): _json_keys(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_keys(v) for v in x]
    return x


def _table4_row(name: str, r: dict) -> str:
    cells = [" / ".join(f"{r[d][k]:.2f}" for k in KS)
             for d in ("IR->Text", "Text->IR", "RGB->IR", "IR->RGB", "RGB->Text", "Text->RGB")]
    return f"| {name} | {r['mean_r']:.2f} | " + " | ".join(cells) + f" | {r['mean_all']:.2f} |"


# ---------------------------------------------------------------------------------------
# Per-source retrieval.


def _retrieval_fixture(seed: int = 5):
    """Sources of 9, 7 and 14 rows; captions repeat within a source (multi-positive text)."""
    rng = np.random.default_rng(seed)
    n = 30
    sources = ["RSICD"] * 9 + ["UCM"] * 7 + ["NWPU"] * 14
    ids = [f"{s}-{i:02d}" for i, s in enumerate(sources)]
    keys = [f"{s}-cap{i % 4}" for i, s in enumerate(sources)]  # four captions per source, repeated
    base = rng.normal(size=(n, 12))
    emb = {"rgb": base + 1.2 * rng.normal(size=(n, 12)), "ir": base + 1.2 * rng.normal(size=(n, 12)),
           "text": base + 1.5 * rng.normal(size=(n, 12))}
    return emb, ids, keys, sources


def test_per_source_retrieval_ranks_within_the_source_only():
    from fusionrs.eval.retrieval import per_source, six_directions

    emb, ids, keys, sources = _retrieval_fixture()
    overall = six_directions(emb, ids, keys)
    want_overall = _brute_six(emb, ids, keys)
    by_source = per_source(emb, ids, keys, sources)  # what the evaluation writes per source
    assert list(by_source) == sorted({"RSICD", "UCM", "NWPU"})
    for src in ("RSICD", "UCM", "NWPU"):
        idx = [i for i, s in enumerate(sources) if s == src]
        got = by_source[src]
        want = _brute_six({k: v[idx] for k, v in emb.items()}, [ids[i] for i in idx], [keys[i] for i in idx])
        for d in want:
            assert got[d] == pytest.approx(want[d]), (src, d)
        if len(idx) <= 10:  # a gallery of ≤ 10 rows: every positive is in the top 10
            assert all(got[d][10] == 100.0 for d in got if "->" in d)
    # The overall gallery (30 rows) is harder: ranking within a source is not a slice of it.
    for d in want_overall:
        assert overall[d] == pytest.approx(want_overall[d]), d
    assert min(overall[d][10] for d in overall if "->" in d) < 100.0


# ---------------------------------------------------------------------------------------
# Zero-shot IR scene classification with the tiny debug CLIP.


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from fusionrs.dev.tiny_clip import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("tinyclip"))


def _class_embeddings(tiny_clip, names: list[str]) -> np.ndarray:
    """Per class: each template's text embedding L2-normalised, averaged, renormalised (§7.2),
    from the model file loaded straight through open_clip."""
    import open_clip
    import torch

    net = open_clip.create_model(tiny_clip["name"], pretrained=tiny_clip["pretrained"]).eval()
    tok = open_clip.get_tokenizer(tiny_clip["name"])
    out = []
    with torch.no_grad():
        for n in names:
            label = n.replace("_", " ").replace("-", " ")
            e = _unit(net.encode_text(tok([t.format(label) for t in TEMPLATES])).numpy())
            out.append(_unit(e.mean(0)))
    return np.stack(out)


def test_zero_shot_top1_and_top5_from_the_models_own_text_embeddings(tiny_clip):
    from fusionrs.eval.clip_eval import zero_shot

    classes_set = ["airport", "bare_land", "storage-tanks", "river", "dense_residential", "forest", "harbor"]
    names = sorted(classes_set)
    cls_emb = _class_embeddings(tiny_clip, names)
    rng = np.random.default_rng(1)
    truth_names = [classes_set[i] for i in rng.integers(0, len(classes_set), 40)]
    # IR embeddings near their class's text embedding, with enough noise that some land elsewhere.
    ir = np.stack([cls_emb[names.index(c)] + 0.12 * rng.normal(size=cls_emb.shape[1]) for c in truth_names])
    ir = (ir * rng.uniform(0.5, 4.0, size=(len(ir), 1))).astype(np.float32)  # scale must not matter
    classes = list(truth_names)
    # Rows without a class: not classified, not counted (their embeddings would be far off).
    unlabelled = rng.normal(size=(3, cls_emb.shape[1])).astype(np.float32)
    ir = np.concatenate([ir[:10], unlabelled[:2], ir[10:], unlabelled[2:]])
    classes = classes[:10] + [None, ""] + classes[10:] + [None]

    rows = [i for i, c in enumerate(classes) if c]
    sims = _unit(ir[rows]) @ cls_emb.T
    order = np.argsort(-sims, axis=1)
    truth = np.array([names.index(classes[i]) for i in rows])
    top1 = 100.0 * np.mean(order[:, 0] == truth)
    top5 = 100.0 * np.mean([truth[j] in order[j, :5] for j in range(len(rows))])
    assert 0 < top1 < 100 and top1 < top5 < 100  # the fixture separates top-1 from top-5

    got = zero_shot((tiny_clip["name"], tiny_clip["pretrained"], tiny_clip["config_json"], False), ir, classes)
    assert got["classes"] == 7 and got["images"] == 40
    assert got["top1"] == pytest.approx(top1) and got["top5"] == pytest.approx(top5)


def test_zero_shot_needs_two_classes(tiny_clip):
    from fusionrs.eval.clip_eval import zero_shot

    ir = np.random.default_rng(0).normal(size=(3, 32)).astype(np.float32)
    args = (tiny_clip["name"], tiny_clip["pretrained"], tiny_clip["config_json"], False)
    assert zero_shot(args, ir, ["river", "river", None]) is None
    assert zero_shot(args, ir, [None, "", None]) is None


# ---------------------------------------------------------------------------------------
# Result writers.


def test_retrieval_results_round_trip_and_render_table4_per_source_and_zero_shot(tmp_path):
    from fusionrs.eval.clip_eval import write_results
    from fusionrs.eval.retrieval import six_directions

    emb, ids, keys, sources = _retrieval_fixture()
    per_source = {}
    for src in ("NWPU", "RSICD", "UCM"):
        idx = [i for i, s in enumerate(sources) if s == src]
        per_source[src] = six_directions({k: v[idx] for k, v in emb.items()}, [ids[i] for i in idx],
                                         [keys[i] for i in idx])
    zs = {"classes": 7, "images": 40, "top1": 37.5, "top5": 92.5}
    tuned = {"split": "test", "rows": 30, "model": "tiny", "pretrained": "best.pt",
             "overall": six_directions(emb, ids, keys), "per_source": per_source, "zero_shot_ir": zs}
    emb2 = {k: v[::-1].copy() for k, v in emb.items()}  # a second model: different numbers, nothing per source
    base = {"split": "test", "rows": 30, "model": "tiny", "pretrained": "",
            "overall": six_directions(emb2, ids, keys), "per_source": {}}
    results = {"C-mixed": tuned, "base": base}
    out = tmp_path / "eval"
    write_results(results, str(out), Storage())

    assert json.loads((out / "retrieval.json").read_text()) == _json_keys(results)  # R@K keys become "1", "5", "10"
    md = (out / "retrieval.md").read_text()
    lines = md.splitlines()
    assert md.endswith("\n")
    assert lines.count(TABLE4_HEADER) == 2  # the overall table and C-mixed's per-source table
    overall_at = lines.index("### Retrieval (R@1/5/10, %)")
    assert lines[overall_at + 1] == TABLE4_HEADER
    assert lines[overall_at + 3] == _table4_row("C-mixed", tuned["overall"])
    assert lines[overall_at + 4] == _table4_row("base", base["overall"])
    src_at = lines.index("### C-mixed: per source")
    assert lines[src_at + 1] == TABLE4_HEADER
    assert lines[src_at + 3:src_at + 6] == [_table4_row(s, per_source[s]) for s in ("NWPU", "RSICD", "UCM")]
    assert ("C-mixed: zero-shot IR scene classification over 7 classes, 40 images: top-1 37.50%, top-5 92.50%"
            in lines)
    assert "### base: per source" not in md and "base: zero-shot" not in md  # nothing to report for it


def _prediction(sid, task, pred, status="ok", refs=("a bright runway",)):
    return {"sample_id": sid, "source": "RSICD", "task": task, "references": json.dumps(list(refs)),
            "prediction": pred, "status": status}


def test_vlm_results_json_predictions_and_table5_with_failed_counts(tmp_path):
    from fusionrs.eval.vlm_eval import write_vlm_results

    preds_b = [_prediction("RSICD-01", "caption", "a bright runway"),
               _prediction("RSICD-01", "scene", "", "generation_error: RuntimeError: out of memory"),
               _prediction("RSICD-02", "caption", "", "empty"),
               _prediction("RSICD-02", "object", "runway, plane"),
               _prediction("RSICD-02", "ir_cue", "", "image_decode_error: UnidentifiedImageError")]
    preds_a = [_prediction("RSICD-01", "caption", "runway"), _prediction("RSICD-02", "caption", "a road")]

    def result(preds, metrics):
        return {"split": "test", "model": "tiny-vlm", "adapter": "", "items": len(preds),
                "images": len({p["sample_id"] for p in preds}),
                "failed": sum(p["status"] != "ok" for p in preds),  # counted here, from the rows
                "metrics": metrics, "predictions": preds}

    metrics_b = {"cap_auto": {"mean": 12.345, "ci": [1.0, 30.0], "n": 2, "images": 2},
                 "cap_ir": {"mean": 50.0, "ci": [0.0, 100.0], "n": 2, "images": 2},
                 "rouge_l": {"mean": 41.666, "ci": [0.0, 83.333], "n": 2, "images": 2},
                 "scene_em": {"mean": 0.0, "ci": [0.0, 0.0], "n": 1, "images": 1},
                 "object_f1": {"mean": 66.6667, "ci": [66.6667, 66.6667], "n": 1, "images": 1},
                 "cue_coverage": {"mean": 0.0, "ci": [0.0, 0.0], "n": 1, "images": 1}}
    metrics_a = {"rouge_l": {"mean": 25.0, "ci": [0.0, 50.0], "n": 2, "images": 2}}  # captions only
    results = {"B-iraware": result(preds_b, metrics_b), "base": result(preds_a, metrics_a)}
    out = tmp_path / "eval"
    md = write_vlm_results(results, str(out), Storage())

    summary = json.loads((out / "vlm_results.json").read_text())
    assert summary == {name: {k: v for k, v in r.items() if k != "predictions"} for name, r in results.items()}
    assert summary["B-iraware"]["failed"] == 3 and summary["base"]["failed"] == 0

    text = (out / "vlm_predictions.jsonl").read_text()
    assert text.endswith("\n")
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows == [{"model": "B-iraware", **p} for p in preds_b] + [{"model": "base", **p} for p in preds_a]
    assert [r["status"] for r in rows if r["status"] != "ok"] == [p["status"] for p in preds_b if p["status"] != "ok"]

    written = (out / "vlm_results.md").read_text()
    assert written.startswith(md) and written.endswith("\n")
    lines = written.splitlines()
    assert "### Generative evaluation (%, mean [95% bootstrap CI over images])" in lines
    assert TABLE5_HEADER in lines
    assert ("| B-iraware | 12.35 [1.00, 30.00] | 50.00 [0.00, 100.00] | 41.67 [0.00, 83.33] | 0.00 [0.00, 0.00] | "
            "66.67 [66.67, 66.67] | 0.00 [0.00, 0.00] |") in lines
    assert "| base | – | – | 25.00 [0.00, 50.00] | – | – | – |" in lines
    assert "- B-iraware: 2 images, 5 items, 3 failed generations (scored as empty)" in lines
    assert "- base: 2 images, 2 items, 0 failed generations (scored as empty)" in lines


# ---------------------------------------------------------------------------------------
# Which checkpoints the CLIP export takes.


def _checkpoints(tmp_path: Path, specs: list[dict]):
    """A real checkpoint directory per spec (model.pt holds its name, for end-of-epoch ones)."""
    from ray.train import Checkpoint

    out = []
    for s in specs:
        d = tmp_path / "ckpts" / s["name"]
        d.mkdir(parents=True)
        (d / "state.json").write_text(json.dumps({"opt_step": s["opt_step"]}))
        if s["end_of_epoch"]:  # ClipStep exports at the end of each epoch only
            (d / "model.pt").write_bytes(f"weights of {s['name']}".encode())
        metrics = {k: v for k, v in s.items() if k != "name"}
        metrics["checkpoint_score"] = float(s.get("val_mean_r", -1.0))
        out.append((Checkpoint.from_directory(str(d)), metrics))
    return out


def _result(tmp_path: Path, best_checkpoints):
    from ray.train import Result

    last = max(best_checkpoints, key=lambda cm: cm[1]["opt_step"]) if best_checkpoints else (None, {})
    return Result(metrics=last[1], checkpoint=last[0], error=None, path=str(tmp_path / "runs" / "r"),
                  best_checkpoints=best_checkpoints)


def _clip_cfg(tmp_path: Path):
    from fusionrs.config import ClipTrainConfig, load_config

    return load_config(None, [f"data={tmp_path / 'data'}", f"run.storage_path={tmp_path / 'runs'}", "run.name=r"],
                       cls=ClipTrainConfig)


SPECS = [  # listed out of step order, as Ray's ranking may give them
    {"name": "e3", "opt_step": 30, "end_of_epoch": True, "val_mean_r": 55.0},  # ties e2: the later one
    {"name": "m45", "opt_step": 45, "end_of_epoch": False},  # the last checkpoint, mid-epoch
    {"name": "e4", "opt_step": 40, "end_of_epoch": True, "val_mean_r": 50.0},  # the last epoch
    {"name": "e2", "opt_step": 20, "end_of_epoch": True, "val_mean_r": 55.0},  # best, earliest of the tie
    {"name": "e1", "opt_step": 10, "end_of_epoch": True, "val_mean_r": 40.0},
    {"name": "m25", "opt_step": 25, "end_of_epoch": False, "val_mean_r": 99.0},  # mid-epoch: never ranked
    {"name": "m15", "opt_step": 15, "end_of_epoch": False},
]


def test_export_takes_the_best_val_mean_r_epoch_earliest_on_ties_and_the_last_epoch(tmp_path):
    from fusionrs.train.clip.step import export_models

    result = _result(tmp_path, _checkpoints(tmp_path, SPECS))
    paths = export_models(result, _clip_cfg(tmp_path), Storage())

    # Reference: the end-of-epoch specs, best = max val_mean_r with the lowest step on ties.
    epochs = sorted((s for s in SPECS if s["end_of_epoch"]), key=lambda s: s["opt_step"])
    top = max(s["val_mean_r"] for s in epochs)
    best = next(s for s in epochs if s["val_mean_r"] == top)["name"]
    latest = epochs[-1]["name"]
    assert (best, latest) == ("e2", "e4")
    export = tmp_path / "runs" / "r" / "export"
    assert paths["best"] == str(export / "best.pt") and paths["latest"] == str(export / "latest.pt")
    assert (export / "best.pt").read_bytes() == f"weights of {best}".encode()
    assert (export / "latest.pt").read_bytes() == f"weights of {latest}".encode()
    assert [m["opt_step"] for m in paths["metrics"]] == [s["opt_step"] for s in epochs]
    assert all(m["end_of_epoch"] for m in paths["metrics"])


def test_best_checkpoint_without_a_score_is_the_last_epoch(tmp_path):
    from fusionrs.train.trainer import best_checkpoint

    result = _result(tmp_path, _checkpoints(tmp_path, SPECS))
    ckpt, metrics = best_checkpoint(result, "")
    assert metrics["opt_step"] == 40 and Path(ckpt.path).name == "e4"
    ckpt, metrics = best_checkpoint(result, "val_mean_r")
    assert metrics["opt_step"] == 20 and Path(ckpt.path).name == "e2"


def test_export_without_end_of_epoch_checkpoints_writes_nothing(tmp_path):
    from fusionrs.train.clip.step import export_models

    specs = [{"name": "m5", "opt_step": 5, "end_of_epoch": False}]
    paths = export_models(_result(tmp_path, _checkpoints(tmp_path, specs)), _clip_cfg(tmp_path), Storage())
    assert paths == {"metrics": []}
    assert not (tmp_path / "runs" / "r" / "export").exists()
