"""The whole evaluation as one job: every configured CLIP checkpoint and VLM adapter on every
configured benchmark, each model pass a Ray Data actor pool (GPU actors on a cluster).

    python -m jobs.evaluate --config configs/eval-suite.yaml

| benchmark | CLIP | VLM |
|---|---|---|
| fusionrs | six-direction retrieval, per source, zero-shot IR scene classification | Table 5 metrics with bootstrap CIs, output audit |
| fusion | RGB / IR / mean / val-selected fusion (image↔text) | – |
| hit_uav | zero-shot object presence (AP, mAP); linear probe with `probe_root` | VQA (presence, count, location, dominant class) |
| caltech | exact-pair RGB↔thermal retrieval | – |

Writes `OUT/results/<benchmark>.json`, `OUT/clip_table.md` and `OUT/vlm_table.md` (one row per
model), and the per-benchmark files the earlier job wrote (`retrieval.json/.md`,
`vlm_results.json/.md`, `vlm_predictions.jsonl`, `hit_uav_predictions.jsonl`). A benchmark
whose data is missing is a "skipped: why" line in the summary, never a crash; a failed
generation stays in every denominator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import ray
import torch
from ray.data import ActorPoolStrategy

from fusionrs.config.eval import EvalConfig
from fusionrs.core.storage import Storage, join
from fusionrs.eval import caltech, hit_uav, probe
from fusionrs.eval.audit import audit_outputs
from fusionrs.eval.clip_eval import ImageEmbedder, embed_split, evaluate_clip, write_results
from fusionrs.eval.vlm_eval import evaluate_vlm, generate, write_vlm_results
from fusionrs.eval.vlm_metrics import TABLE5
from fusionrs.train.clip.model import create_clip
from fusionrs.train.vlm.model import trained_with


@dataclass
class SuiteResult:
    results: dict = field(default_factory=dict)  # benchmark → {model name → result}
    skipped: dict = field(default_factory=dict)  # benchmark → why

    def skip(self, benchmark: str, why: str) -> None:
        self.skipped[benchmark] = why


def run_suite(cfg: EvalConfig, storage: Storage | None = None) -> SuiteResult:
    storage = storage or Storage.from_env()
    out = SuiteResult()
    if cfg.clip.checkpoints:
        clip_benchmarks(cfg, storage, out)
    if cfg.vlm.model:
        vlm_benchmarks(cfg, storage, out)
    for name, by_model in out.results.items():
        storage.write_text(join(cfg.out, "results", f"{name}.json"), json.dumps(by_model, indent=1, sort_keys=True,
                                                                                default=_jsonable))
    storage.write_text(join(cfg.out, "results", "skipped.json"), json.dumps(out.skipped, indent=1, sort_keys=True))
    storage.write_text(join(cfg.out, "clip_table.md"), clip_table(out))
    storage.write_text(join(cfg.out, "vlm_table.md"), vlm_table(out))
    return out


# ---------------------------------------------------------------------------------------
# CLIP


def clip_benchmarks(cfg: EvalConfig, storage: Storage, out: SuiteResult) -> None:
    b, m, c = cfg.benchmarks, cfg.clip.model, cfg.compute
    hit = _hit_uav_images(b.hit_uav.root, storage, out, "hit_uav_presence")
    pairs = _caltech_pairs(b.caltech, storage, out)
    probe_sets = _probe_sets(b.hit_uav.probe_root, storage, out)
    retrieval = {}
    for name, ckpt in cfg.clip.checkpoints.items():
        args = (m.name, ckpt, m.config_json, m.quick_gelu)
        if b.fusionrs or b.fusion:
            test = embed_split(cfg.data, cfg.split, *args, storage, c.actors, c.num_gpus, c.batch_size)
        if b.fusionrs:
            retrieval[name] = evaluate_clip(cfg.data, cfg.split, *args, embeddings=test)
            out.results.setdefault("fusionrs_retrieval", {})[name] = {  # the top-5 examples: retrieval_examples.json
                k: v for k, v in retrieval[name].items() if k != "examples"}
        if b.fusion:
            val = _try(lambda: embed_split(cfg.data, "val", *args, storage, c.actors, c.num_gpus, c.batch_size))
            if val is None:
                out.skip("fusion", f"no val rows in {cfg.data}: the fusion weight is chosen on val")
            else:
                out.results.setdefault("fusion", {})[name] = probe.dual_modal_fusion(
                    {k: val[k] for k in ("rgb", "ir", "text")}, {k: test[k] for k in ("rgb", "ir", "text")})
        if hit is not None:
            images, folder = hit
            emb = embed_images(args, [join(folder, i.file_name) for i in images], storage, c)
            text = probe.class_text_embeddings(_text_encoder(args))
            out.results.setdefault("hit_uav_presence", {})[name] = probe.zero_shot_presence(
                emb, text, probe.presence_labels(images))
        if probe_sets is not None:
            feats = {s: embed_images(args, [join(folder, i.file_name) for i in imgs], storage, c)
                     for s, (imgs, folder) in probe_sets.items()}
            labels = {s: probe.presence_labels(imgs) for s, (imgs, _) in probe_sets.items()}
            out.results.setdefault("hit_uav_probe", {})[name] = probe.linear_probe(feats, labels)
        if pairs is not None:
            rgb = embed_images(args, [p.rgb for p in pairs], storage, c)
            thermal = embed_images(args, [p.thermal for p in pairs], storage, c)
            out.results.setdefault("caltech", {})[name] = caltech.caltech_retrieval(rgb, thermal)
    if retrieval:
        write_results(retrieval, cfg.out, storage)


def embed_images(net_args: tuple, uris: list[str], storage: Storage, compute) -> np.ndarray:
    """Image embeddings (rows in `uris` order) through an actor pool; images read by workers."""
    ds = ray.data.from_items([{"i": i, "uri": u} for i, u in enumerate(uris)], override_num_blocks=max(1, len(uris) // 64))
    ds = ds.map_batches(lambda b: {"i": b["i"], "image": [storage.read_bytes(u) for u in b["uri"]]}, batch_size=64)
    ds = ds.map_batches(ImageEmbedder, fn_constructor_kwargs=dict(zip(("model", "pretrained", "config_json",
                                                                        "quick_gelu"), net_args)),
                        batch_size=compute.batch_size, compute=ActorPoolStrategy(min_size=1, max_size=compute.actors),
                        num_gpus=compute.num_gpus or None, batch_format="numpy")
    rows = sorted(ds.take_all(), key=lambda r: r["i"])
    return np.stack([r["embedding"] for r in rows])


def _text_encoder(net_args: tuple):
    net, _, tok = create_clip(*net_args)
    net.eval()

    def encode(texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return net.encode_text(tok(texts)).float().numpy()
    return encode


# ---------------------------------------------------------------------------------------
# VLM


def vlm_benchmarks(cfg: EvalConfig, storage: Storage, out: SuiteResult) -> None:
    b, v, c = cfg.benchmarks, cfg.vlm, cfg.compute
    hit = _hit_uav_images(b.hit_uav.root, storage, out, "hit_uav_vqa")
    questions = hit_uav.build_hit_uav_vqa(hit[0], b.hit_uav.seed) if hit is not None else []
    generative, hit_predictions = {}, []
    for name, adapter in (v.adapters or {"base": ""}).items():
        # What the model sees: as configured, else what the adapter was trained with, else IR.
        inputs = v.inputs.get(name) or trained_with(adapter, storage).get("inputs") or "ir"
        if b.fusionrs:
            r = evaluate_vlm(cfg.data, cfg.split, v.model, adapter=adapter, tasks=v.tasks, actors=c.actors,
                             num_gpus=c.num_gpus, batch_size=c.batch_size, max_pixels=v.max_pixels,
                             min_pixels=v.min_pixels, n_boot=v.bootstrap, inputs=inputs)
            generative[name] = r
            audit_rows = [{**p, "evaluation_type": "caption", "task_type": p["task"], "benchmark_id": p["sample_id"],
                           "references": json.loads(p["references"])} for p in r["predictions"] if p["task"] == "caption"]
            out.results.setdefault("fusionrs_generative", {})[name] = {
                **{k: val for k, val in r.items() if k != "predictions"}, "audit": audit_outputs(audit_rows)}
        if questions and inputs != "ir":
            out.skipped[f"hit_uav_vqa ({name})"] = f"HIT-UAV has thermal images only; {name} reads {inputs}"
        elif questions:
            folder = hit[1]
            items = [{**q, "image_uri": join(folder, q["image_locator"].rsplit("/", 1)[-1]),
                      "instruction": q["prompt"]} for q in questions]
            ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // 64))
            ds = ds.map_batches(_with_image_bytes(storage), batch_size=64, batch_format="pandas")
            preds = generate(ds, v.model, adapter, c.actors, c.num_gpus, c.batch_size, v.max_pixels, v.min_pixels)
            preds = sorted(({**_plain(p), "model": name, "evaluation_type": "vqa", "record_key": f"vqa:{p['question_id']}"}
                            for p in preds), key=lambda p: p["question_id"])
            hit_predictions += preds
            out.results.setdefault("hit_uav_vqa", {})[name] = {
                **hit_uav.score_hit_uav(preds, n_boot=v.bootstrap), "audit": audit_outputs(preds)}
    if generative:
        write_vlm_results(generative, cfg.out, storage)
    if hit_predictions:
        storage.write_text(join(cfg.out, "hit_uav_predictions.jsonl"),
                           "".join(json.dumps(p, default=_jsonable) + "\n" for p in hit_predictions))


def _with_image_bytes(storage: Storage):
    def read(df):
        df["image"] = [storage.read_bytes(u) for u in df["image_uri"]]
        return df.drop(columns=["image_uri"])
    return read


# ---------------------------------------------------------------------------------------
# Benchmark data: present, or a skip that says why.


def _hit_uav_images(root: str, storage: Storage, out: SuiteResult, benchmark: str):
    if not root:
        out.skip(benchmark, "benchmarks.hit_uav.root is not set")
        return None
    try:
        images = hit_uav.read_hit_uav(root, storage)
        return images, hit_uav.image_dir(root, [i.file_name for i in images], storage)
    except (FileNotFoundError, hit_uav.HitUavFormatError) as e:
        out.skip(benchmark, str(e))
        return None


def _probe_sets(root: str, storage: Storage, out: SuiteResult):
    if not root:
        out.skip("hit_uav_probe", "benchmarks.hit_uav.probe_root is not set (the probe needs train, val and test)")
        return None
    sets = {}
    for split in ("train", "val", "test"):
        uri = join(root, f"{split}.json")
        if not storage.exists(uri):
            out.skip("hit_uav_probe", f"{uri} not found: the linear probe needs the release's train, val and test")
            return None
        images = hit_uav.read_coco(uri, storage)
        sets[split] = (images, join(root, split))
    return sets


def _caltech_pairs(c, storage: Storage, out: SuiteResult):
    if not c.dataset_root:
        out.skip("caltech", "benchmarks.caltech.dataset_root is not set")
        return None
    try:
        return caltech.read_caltech_pairs(c.dataset_root, c.splits_root or c.dataset_root, c.split, storage)
    except (FileNotFoundError, ValueError) as e:
        out.skip("caltech", str(e))
        return None


def _plain(row: dict) -> dict:
    """Ray Data hands list columns back as arrays: plain Python for scoring and JSON."""
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v.item() if isinstance(v, np.generic) else v)
            for k, v in row.items()}


def _try(fn):
    try:
        return fn()
    except ValueError:
        return None


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x).__name__)


# ---------------------------------------------------------------------------------------
# The combined tables.


def clip_table(s: SuiteResult) -> str:
    r = s.results
    models = sorted({m for b in ("fusionrs_retrieval", "fusion", "hit_uav_presence", "hit_uav_probe", "caltech")
                     for m in r.get(b, {})})
    head = "| Model | Mean R (test) | Fusion: val-selected α | Fusion mean R | HIT-UAV presence mAP | HIT-UAV probe mAP | Caltech mean R |"
    lines = ["### CLIP: every benchmark", head, "|---" * 7 + "|"]
    for m in models:
        f = r.get("fusion", {}).get(m)
        cells = [_num(r.get("fusionrs_retrieval", {}).get(m, {}).get("overall", {}).get("mean_r")),
                 _num(f and f.get("selected_rgb_weight")), _num(f and _fusion_mean(f)),
                 _num(_pct(r.get("hit_uav_presence", {}).get(m, {}).get("mAP"))),
                 _num(_pct(r.get("hit_uav_probe", {}).get(m, {}).get("mAP"))),
                 _num(r.get("caltech", {}).get(m, {}).get("mean_recall"))]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + _skipped(s) + "\n"


def vlm_table(s: SuiteResult) -> str:
    r = s.results
    models = sorted({m for b in ("fusionrs_generative", "hit_uav_vqa") for m in r.get(b, {})})
    cols = [name for name, _, _ in TABLE5]
    lines = ["### VLM: every benchmark",
             "| Model | Inputs | " + " | ".join(cols) + " | HIT-UAV VQA acc | Cap. IR-cue rate (audit) |",
             "|---" * (len(cols) + 4) + "|"]
    for m in models:
        g = r.get("fusionrs_generative", {}).get(m, {})
        inputs = {"ir": "IR", "rgb+ir": "RGB+IR"}.get(g.get("inputs", "ir"), g.get("inputs"))
        cells = [_num((g.get("metrics", {}).get(metric) or {}).get("mean")) for _, _, metric in TABLE5]
        h = r.get("hit_uav_vqa", {}).get(m, {})
        cells.append(_num((h.get("overall") or {}).get("accuracy")))
        cells.append(_num(_pct(g.get("audit", {}).get("caption", {}).get("overall", {}).get("ir_cue_rate"))))
        lines.append(f"| {m} | {inputs} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + _skipped(s) + "\n"


def _fusion_mean(f: dict):
    return f.get("settings", {}).get("RGB+IR-val-selected", {}).get("mean_recall")


def _pct(x):
    return None if x is None else 100 * x


def _num(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def _skipped(s: SuiteResult) -> str:
    if not s.skipped:
        return ""
    return "\n\n" + "\n".join(f"- {b}: skipped: {why}" for b, why in sorted(s.skipped.items()))


def summary(s: SuiteResult) -> str:
    ran = ", ".join(f"{b} ({len(m)} models)" for b, m in sorted(s.results.items())) or "nothing"
    return f"ran: {ran}" + _skipped(s)
