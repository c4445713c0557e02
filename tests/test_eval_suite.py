"""The whole evaluation as one job (configs/eval-suite.yaml's shape), end to end on CPU: the demo
build, the tiny CLIP and VLM debug models, the real HIT-UAV sample, a Caltech RGB-T folder in its
real layout; missing benchmark data is a skip that says why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.slow


def caltech_folder(root: Path, n: int = 6) -> Path:
    """The official layout: split files `rgb_test.txt` / `thermal8_test.txt`, lines `image,mask`."""
    rgb, thermal = [], []
    for i in range(n):
        for kind in ("color", "thermal8", "masks"):
            (root / "site" / kind).mkdir(parents=True, exist_ok=True)
        a = np.random.default_rng(i).integers(0, 255, (64, 80, 3)).astype(np.uint8)
        Image.fromarray(a).save(root / "site" / "color" / f"f{i}.png")
        Image.fromarray(a.mean(2).astype(np.uint8)).save(root / "site" / "thermal8" / f"f{i}.png")
        Image.fromarray((a[..., 0] > 128).astype(np.uint8) * 255).save(root / "site" / "masks" / f"f{i}.png")
        rgb.append(f"site/color/f{i}.png,site/masks/f{i}.png")
        thermal.append(f"site/thermal8/f{i}.png,site/masks/f{i}.png")
    (root / "rgb_test.txt").write_text("\n".join(rgb) + "\n")
    (root / "thermal8_test.txt").write_text("\n".join(thermal) + "\n")
    return root


def test_the_suite_runs_every_benchmark_and_skips_what_has_no_data(ray_local, demo_build, tmp_path):
    from fusionrs.config import EvalConfig, load_config
    from fusionrs.dev.tiny_clip import write_tiny_clip
    from fusionrs.dev.tiny_vlm import write_tiny_qwen2_5_vl
    from fusionrs.eval.suite import run_suite

    clip = write_tiny_clip(tmp_path / "clip")
    vlm = write_tiny_qwen2_5_vl(tmp_path / "vlm")
    hit = SHARED_DATA / "hit-uav-sample"
    out = tmp_path / "eval"
    cfg = load_config(None, [
        f"data={demo_build}", f"out={out}", f"clip.model.name={clip['name']}", f"clip.model.config_json={clip['config_json']}",
        f"clip.checkpoints.tiny={clip['pretrained']}", f"vlm.model={vlm}", "vlm.adapters.base=", "vlm.bootstrap=50",
        "vlm.max_pixels=3136", f"benchmarks.hit_uav.root={hit if hit.exists() else ''}",
        f"benchmarks.caltech.dataset_root={caltech_folder(tmp_path / 'caltech')}"], cls=EvalConfig)
    result = run_suite(cfg)

    results = {p.stem: json.loads(p.read_text()) for p in (out / "results").glob("*.json")}
    assert results["fusionrs_retrieval"]["tiny"]["overall"]["mean_r"] >= 0
    fusion = results["fusion"]["tiny"]
    assert fusion["selected_rgb_weight"] in (0, 0.25, 0.5, 0.75, 1) and set(fusion["settings"]) == {
        "RGB-only", "IR-only", "RGB+IR-mean", "RGB+IR-val-selected"}
    assert results["caltech"]["tiny"]["pairs"] == 6
    gen = results["fusionrs_generative"]["base"]
    assert gen["items"] > 0 and "ir_cue_rate" in gen["audit"]["caption"]["overall"]
    assert "hit_uav_probe" in result.skipped and "probe_root" in result.skipped["hit_uav_probe"]
    if hit.exists():
        presence = results["hit_uav_presence"]["tiny"]
        assert presence["num_samples"] == 20 and 0 <= presence["mAP"] <= 1
        vqa = results["hit_uav_vqa"]["base"]
        assert vqa["overall"]["rows"] == 112  # the real sample's questions, every one scored (failures too)
        preds = [json.loads(line) for line in (out / "hit_uav_predictions.jsonl").read_text().splitlines()]
        assert len(preds) == 112 and all(p["max_new_tokens"] == 12 for p in preds)
    else:
        assert "hit_uav_vqa" in result.skipped and "hit_uav_presence" in result.skipped
    table = (out / "clip_table.md").read_text()
    assert "| tiny |" in table and "hit_uav_probe: skipped:" in table
    assert "| base |" in (out / "vlm_table.md").read_text()
    assert (out / "retrieval.json").exists() and (out / "vlm_predictions.jsonl").exists()
