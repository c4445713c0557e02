"""`fusionrs demo`: the whole system on the embedded default, offline, CPU only, no keys.

    1. generate sample sources in the five real formats (dev/sample.py), with planted dirt
    2. build the dataset from the `demo` recipe (configs/demo.yaml) on a local Ray instance
    3. train the tiny debug CLIP (recipe clip-demo) and evaluate it against the untrained one
    4. LoRA-tune the tiny debug Qwen2.5-VL (recipe vlm-demo) and evaluate base and adapter
    5. one HTML page about all of it (report_html.py): OUT/report.html

Every step runs the same code as a cluster job; only the recipes' model sizes differ.
"""

from __future__ import annotations

import time
from pathlib import Path

from fusionrs.build.pipeline import build
from fusionrs.config import load_config
from fusionrs.config.recipes import recipe
from fusionrs.config.train import ClipTrainConfig, VlmTrainConfig
from fusionrs.core.storage import join
from fusionrs.dataset.layout import REPORT_FILE
from fusionrs.dev.sample import source_overrides, write_sample
from fusionrs.dev.tiny_clip import write_tiny_clip
from fusionrs.dev.tiny_vlm import write_tiny_qwen2_5_vl
from fusionrs.eval.clip_eval import evaluate_clip, write_results
from fusionrs.eval.retrieval import markdown_table
from fusionrs.eval.vlm_eval import evaluate_vlm, write_vlm_results
from fusionrs.report_html import write_report
from fusionrs.train.clip.step import train_clip
from fusionrs.train.vlm.step import train_vlm


def run_demo(out: str, per_source: int = 40, overrides: list[str] = (), clip: bool = True, vlm: bool = True) -> dict:
    """Returns where everything went and the headline tables (Markdown)."""
    t0 = time.time()
    out = str(Path(out).resolve())
    print(f"[1/4] generating sample sources under {out}/sample ...", flush=True)
    info = write_sample(f"{out}/sample", per_source=per_source, seed=0)
    print(f"      {info['records']} records ({info['planted']} planted problems)")
    print("[2/4] building the dataset on a local Ray instance (recipe: demo) ...", flush=True)
    demo = recipe("demo")
    cfg = load_config(demo, [*source_overrides(demo, f"{out}/sample"), f"output={out}/build", *overrides])
    manifest = build(cfg)
    result = {"build": cfg.output, "manifest": manifest, "clip_md": "", "vlm_md": ""}
    runs = []
    if clip:
        print("[3/4] training a tiny tri-modal CLIP on it (Ray Train, 2 workers) and evaluating ...", flush=True)
        result["clip_md"], run = demo_clip(out, cfg.output)
        runs.append(run)
    if vlm:
        print("[4/4] LoRA-tuning a tiny Qwen2.5-VL on the IR-aware rows (Ray Train + DeepSpeed) and evaluating ...",
              flush=True)
        result["vlm_md"], run = demo_vlm(out, cfg.output)
        runs.append(run)
    result["report"] = write_report(cfg.output, runs, [f"{out}/eval"] if runs else [], out=f"{out}/{REPORT_FILE}")
    result["seconds"] = time.time() - t0
    return result


def demo_clip(out: str, data: str) -> tuple[str, str]:
    """Train the tiny CLIP (recipe clip-demo, pointed at this demo) and evaluate it against the
    untrained model on the test split. Returns the table and the run's folder."""
    tiny = write_tiny_clip(f"{out}/tiny-clip")
    cfg = load_config(recipe("clip-demo"), [f"data={data}", f"run.storage_path={out}/train",
                                            *(f"model.{k}={v}" for k, v in tiny.items())], cls=ClipTrainConfig)
    _, exports = train_clip(cfg)
    results = {name: evaluate_clip(data, "test", tiny["name"], ck, tiny["config_json"])
               for name, ck in (("untrained tiny CLIP", tiny["pretrained"]), ("trained tiny CLIP", exports["best"]))}
    write_results(results, f"{out}/eval")
    table = markdown_table({k: v["overall"] for k, v in results.items()}, "Retrieval on the demo's test split (%)")
    return table, join(cfg.run.storage_path, cfg.run.name)


def demo_vlm(out: str, data: str) -> tuple[str, str]:
    """LoRA-tune the tiny Qwen2.5-VL (recipe vlm-demo) and evaluate the base model and the adapter
    on the test split (four tasks, Table 5 layout). Returns the table and the run's folder."""
    model = write_tiny_qwen2_5_vl(f"{out}/tiny-qwen2_5_vl")
    cfg = load_config(recipe("vlm-demo"), [f"data={data}", f"run.storage_path={out}/train", f"model.path={model}"],
                      cls=VlmTrainConfig)
    _, adapter = train_vlm(cfg)
    results = {"tiny Qwen2.5-VL (base)": evaluate_vlm(data, "test", model),
               f"+ LoRA {cfg.setting}": evaluate_vlm(data, "test", model, adapter=adapter)}
    return write_vlm_results(results, f"{out}/eval"), join(cfg.run.storage_path, cfg.run.name)
