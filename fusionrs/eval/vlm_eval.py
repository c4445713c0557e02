"""Generative evaluation of a VLM (base, or base + LoRA adapter) on a build's val/test split.

Items: the split's IR-aware subset, one image per group (eval representatives), × the four
tasks; with `inputs="rgb+ir"` each item carries the RGB image too and the instructions name both
(what an adapter trained with `inputs: rgb+ir` expects; instructions.INSTRUCTIONS_RGB_IR). Generation is a Ray Data pass over an actor pool (the model loads once per actor; GPU
actors on a cluster), greedy decoding, batched per task (max_new_tokens 96 for captions and
IR-cue QA, 32 for scene and object QA). A row whose generation fails or comes back empty keeps
its place with an empty prediction and a status (it is scored 0: the denominator never shrinks).
Scores and 95% bootstrap CIs over images come from vlm_metrics; written as vlm_results.json,
vlm_predictions.jsonl and vlm_results.md (paper Table 5 layout).

References per task:
- caption: the IR-aware caption and the original caption (best of the two, as the official
  scorer takes the max over references);
- scene: the scene label (class name, else derived from the caption);
- object: the objects named in the original caption and in the IR-aware caption;
- ir_cue: the IR-aware caption (its cue families).
"""

from __future__ import annotations

import json

import torch
from ray.data import ActorPoolStrategy

from fusionrs.core.storage import Storage, join
from fusionrs.eval.vlm_metrics import GENERATION_OK, aggregate, score_row, table5
from fusionrs.train.vlm.chat import decode_image, generation_inputs
from fusionrs.train.vlm.data import ir_aware_rows
from fusionrs.train.vlm.instructions import MAX_NEW_TOKENS, TASKS, instruction_texts, objects_in, scene_label
from fusionrs.train.vlm.model import load_model, load_processor


def references(row: dict, task: str) -> list[str]:
    original, ir_aware = row.get("caption") or "", row.get("ir_aware_caption") or ""
    if task == "caption":
        return [r for r in (ir_aware, original) if r]
    if task == "scene":
        label = scene_label(row.get("class_name"), original)
        return [label] if label else []
    if task == "object":
        return [", ".join(o) for o in (objects_in(original), objects_in(ir_aware)) if o]
    return [ir_aware] if ir_aware else []


def eval_items(batch: dict, tasks: tuple[str, ...] = TASKS, inputs: str = "ir") -> dict:
    """Triplet rows → evaluation items (one per image and task that has a reference): the
    Generator's columns `image` (IR), `rgb_image` (rgb+ir only), `instruction`, `max_new_tokens`,
    plus what scoring needs."""
    texts = instruction_texts(inputs)
    keys = ["sample_id", "source", "task", "instruction", "max_new_tokens", "references", "image"]
    cols: dict[str, list] = {k: [] for k in keys + (["rgb_image"] if inputs == "rgb+ir" else [])}
    for i in range(len(batch["sample_id"])):
        row = {k: batch[k][i] for k in ("caption", "ir_aware_caption", "class_name")}
        for task in tasks:
            refs = references(row, task)
            if not refs:
                continue
            cols["sample_id"].append(batch["sample_id"][i])
            cols["source"].append(batch["source"][i])
            cols["task"].append(task)
            cols["instruction"].append(texts[task])
            cols["max_new_tokens"].append(MAX_NEW_TOKENS[task])
            cols["references"].append(json.dumps(refs))
            cols["image"].append(batch["ir_jpeg"][i])
            if "rgb_image" in cols:
                cols["rgb_image"].append(batch["rgb_jpeg"][i])
    return cols


class Generator:
    """Ray Data actor: loads the processor, the base model and the adapter once. Rows carry an
    `image` (JPEG bytes; the IR image), an `instruction` and `max_new_tokens`, and `rgb_image`
    for dual-image rows (the model then sees RGB then IR: chat.model_view); every other column
    passes through, and `prediction` and `status` are added. Greedy decoding, batched per length cap."""

    def __init__(self, model: str, adapter: str = "", max_pixels: int = 0, min_pixels: int = 0, dtype: str = "auto"):
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bfloat16" if self.device == "cuda" else "float32"
        self.processor = load_processor(model, max_pixels, min_pixels)
        self.model = load_model(model, dtype=dtype, adapter=adapter).to(self.device).eval()

    def _generate(self, images, instructions, max_new_tokens: int) -> list[str]:
        inputs = generation_inputs(self.processor, images, instructions).to(self.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        texts = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]  # whitespace-collapsed, as the official runner

    def __call__(self, batch: dict) -> dict:
        n = len(batch["instruction"])
        preds, status = [""] * n, [GENERATION_OK] * n
        images: list = [None] * n
        for i in range(n):
            try:
                images[i] = ([decode_image(batch["rgb_image"][i]), decode_image(batch["image"][i])]
                             if "rgb_image" in batch else decode_image(batch["image"][i]))
            except Exception as e:  # noqa: BLE001 - a bad image is that row's failure, not the batch's
                status[i] = f"image_decode_error: {type(e).__name__}"
        for cap in sorted({int(x) for x in batch["max_new_tokens"]}):
            idx = [i for i in range(n) if int(batch["max_new_tokens"][i]) == cap and images[i] is not None]
            if not idx:
                continue
            try:
                texts = self._generate([images[i] for i in idx], [batch["instruction"][i] for i in idx], cap)
            except Exception:  # noqa: BLE001 - retry one by one so one bad row does not fail the others
                texts = []
                for i in idx:
                    try:
                        texts += self._generate([images[i]], [batch["instruction"][i]], cap)
                    except Exception as e:  # noqa: BLE001
                        texts.append("")
                        status[i] = f"generation_error: {type(e).__name__}: {str(e)[:200]}"
            for i, t in zip(idx, texts):
                preds[i] = t
                if not t and status[i] == GENERATION_OK:
                    status[i] = "empty"
        return {**{k: v for k, v in batch.items() if k not in ("image", "rgb_image")}, "prediction": preds,
                "status": status}


def generate(ds, model: str, adapter: str = "", actors: int = 1, num_gpus: float = 0.0, batch_size: int = 16,
             max_pixels: int = 0, min_pixels: int = 0) -> list[dict]:
    """Predictions for a Ray Dataset of Generator rows, through an actor pool (GPU actors on a
    cluster); a failed generation keeps its row (status says why)."""
    ds = ds.map_batches(Generator, fn_constructor_kwargs=dict(model=model, adapter=adapter, max_pixels=max_pixels,
                                                              min_pixels=min_pixels),
                        batch_size=batch_size, compute=ActorPoolStrategy(min_size=1, max_size=actors),
                        num_gpus=num_gpus or None, batch_format="numpy")
    return ds.take_all()


def evaluate_vlm(data: str, split: str, model: str, adapter: str = "", tasks=TASKS, storage=None, actors: int = 1,
                 num_gpus: float = 0.0, batch_size: int = 16, max_pixels: int = 0, min_pixels: int = 0,
                 n_boot: int = 1000, inputs: str = "ir") -> dict:
    """Generate on the split and score; returns {metrics, per_task_rows, predictions}."""
    storage = storage or Storage.from_env()
    ds = ir_aware_rows(data, split, storage, eval_only=True, inputs=inputs)  # the rows training reads, one per group
    ds = ds.map_batches(eval_items, fn_kwargs={"tasks": tuple(tasks), "inputs": inputs}, batch_format="numpy",
                        batch_size=64)
    predictions = sorted(generate(ds, model, adapter, actors, num_gpus, batch_size, max_pixels, min_pixels),
                         key=lambda r: (r["sample_id"], TASKS.index(r["task"])))
    if not predictions:
        raise ValueError(f"no {split} rows with accepted IR-aware captions in {data}")
    scored = []
    for p in predictions:
        refs = json.loads(p["references"])
        scored.append({"sample_id": p["sample_id"], "task": p["task"],
                       "scores": score_row(p["task"], p["prediction"] if p["status"] == GENERATION_OK else "", refs)})
    return {"split": split, "model": model, "adapter": adapter, "inputs": inputs, "items": len(predictions),
            "images": len({p["sample_id"] for p in predictions}),
            "failed": sum(p["status"] != GENERATION_OK for p in predictions),
            "metrics": aggregate(scored, n_boot), "predictions": predictions}


def write_vlm_results(results: dict[str, dict], out_dir: str, storage=None) -> str:
    """vlm_results.json (metrics with CIs), vlm_predictions.jsonl, vlm_results.md (Table 5 layout)."""
    storage = storage or Storage.from_env()
    summary = {name: {k: v for k, v in r.items() if k != "predictions"} for name, r in results.items()}
    storage.write_text(join(out_dir, "vlm_results.json"), json.dumps(summary, indent=1, sort_keys=True))
    lines = [json.dumps({"model": name, **p}) for name, r in results.items() for p in r["predictions"]]
    storage.write_text(join(out_dir, "vlm_predictions.jsonl"), "\n".join(lines) + "\n")
    md = table5({name: r["metrics"] for name, r in results.items()},
                "Generative evaluation (%, mean [95% bootstrap CI over images])")
    extra = "\n".join(f"- {name}: {r['images']} images, {r['items']} items, {r['failed']} failed generations "
                      f"(scored as empty)" for name, r in results.items())
    storage.write_text(join(out_dir, "vlm_results.md"), md + "\n\n" + extra + "\n")
    return md
