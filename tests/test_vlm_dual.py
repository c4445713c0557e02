"""Dual-image rows (`inputs: rgb+ir`): the RGB image then its IR image in one user turn for
processors that take several (Qwen2.5-VL, LLaVA-NeXT), one side-by-side picture for single-image
models; labels, packing, generation, evaluation items and the Ray path (train, then the suite
reports IR and RGB+IR side by side)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fusionrs.train.vlm.chat import (
    IGNORE,
    SIDE_BY_SIDE_NOTE,
    collate,
    encode_example,
    expand_placeholders,
    generation_inputs,
    image_runs,
    model_view,
)
from fusionrs.train.vlm.instructions import INSTRUCTIONS, INSTRUCTIONS_RGB_IR, instruction_rows

REPO = Path(__file__).resolve().parents[1]


def picture(h: int, w: int, seed: int, colour: bool = False) -> Image.Image:
    rng = np.random.default_rng(seed)
    if colour:
        return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).convert("RGB")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from fusionrs.cli import main

    root = tmp_path_factory.mktemp("dual")
    paths = {}
    for kind in ("qwen2_5_vl", "llava", "llava_next"):
        assert main(["tiny-model", kind, str(root / kind)]) == 0
        paths[kind] = str(root / kind)
    return paths


def processor_of(path):
    from fusionrs.train.vlm.model import load_processor

    return load_processor(path, max_pixels=3136) if "qwen" in path else load_processor(path)


def image_id_of(processor) -> int:
    return processor.tokenizer.convert_tokens_to_ids(str(getattr(processor.image_token, "content",
                                                                 processor.image_token)))


@pytest.mark.parametrize("kind", ["qwen2_5_vl", "llava_next"])
def test_multi_image_processors_get_both_images_and_only_the_answer_is_learned(tiny, kind):
    processor = processor_of(tiny[kind])
    rgb, ir = picture(48, 64, 0, colour=True), picture(48, 64, 1)
    response = "a bright runway crosses dark fields"
    ex = encode_example(processor, [rgb, ir], INSTRUCTIONS_RGB_IR["caption"], response)
    tok = processor.tokenizer
    assert tok.decode(ex["input_ids"][ex["labels"] != IGNORE]).strip() == response + tok.eos_token
    image_id = image_id_of(processor)
    runs = image_runs(ex["input_ids"], image_id)
    assert len(runs) == 2 and not bool((ex["labels"][ex["input_ids"] == image_id] != IGNORE).any())
    if kind == "qwen2_5_vl":  # one grid per image, and each run is that image's merged patch count
        grid = ex["image_grid_thw"]
        assert grid.shape == (2, 3)
        merge = processor.image_processor.merge_size ** 2
        assert runs == [int(g.prod()) // merge for g in grid]
    else:  # LLaVA-NeXT: one pixel_values entry and one image size per image
        assert ex["pixel_values"].shape[0] == 2 and ex["image_sizes"].tolist() == [[48, 64], [48, 64]]
    prompt = tok.decode(ex["input_ids"][ex["labels"] == IGNORE])
    assert "this RGB remote sensing image and its infrared counterpart" in prompt
    # Two dual rows of different image sizes batch together.
    other = encode_example(processor, [picture(40, 40, 2, True), picture(40, 40, 3)], INSTRUCTIONS_RGB_IR["scene"],
                           "airport")
    batch = collate([ex, other], tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 2 and (batch["labels"] != IGNORE).sum() == \
        (ex["labels"] != IGNORE).sum() + (other["labels"] != IGNORE).sum()


def test_the_rgb_image_reaches_the_model(tiny):
    """Same IR image, different RGB image: different logits (the RGB image is not dropped)."""
    from fusionrs.train.vlm.model import load_model

    processor, model = processor_of(tiny["qwen2_5_vl"]), load_model(tiny["qwen2_5_vl"]).eval()
    ir = picture(56, 56, 1)
    logits = []
    for seed in (10, 11):
        ex = encode_example(processor, [picture(56, 56, seed, True), ir], INSTRUCTIONS_RGB_IR["caption"], "a road")
        batch = collate([ex], processor.tokenizer.pad_token_id)
        with torch.no_grad():
            logits.append(model(**batch).logits)
    assert not torch.allclose(logits[0], logits[1])


def test_single_image_models_get_one_side_by_side_picture_and_are_told_so(tiny):
    processor = processor_of(tiny["llava"])
    rgb, ir = picture(40, 60, 0, colour=True), picture(20, 20, 1)
    images, instruction = model_view(processor, [rgb, ir], INSTRUCTIONS_RGB_IR["caption"])
    assert len(images) == 1 and images[0].size == (60 + 40, 40)  # IR resized to the RGB height, aspect kept
    assert np.array_equal(np.asarray(images[0])[:, :60], np.asarray(rgb))
    assert instruction == SIDE_BY_SIDE_NOTE + INSTRUCTIONS_RGB_IR["caption"]
    ex = encode_example(processor, [rgb, ir], INSTRUCTIONS_RGB_IR["caption"], "a harbor")
    assert len(image_runs(ex["input_ids"], image_id_of(processor))) == 1
    assert "left half of the picture is the RGB image" in processor.tokenizer.decode(ex["input_ids"])
    # One image stays as it is, for every processor.
    assert model_view(processor, [ir], INSTRUCTIONS["caption"]) == ([ir], INSTRUCTIONS["caption"])


def test_placeholders_expand_per_image_and_adjacent_ones_share_a_run():
    assert expand_placeholders("a<i>b<i>c", "<i>", [2, 3]) == "a<i><i>b<i><i><i>c"
    assert expand_placeholders("a<i><i>c", "<i>", [5]) == "a" + "<i>" * 5 + "c"
    with pytest.raises(ValueError, match="cannot tell"):
        expand_placeholders("a<i>b<i>c", "<i>", [5])
    assert image_runs(torch.tensor([1, 7, 7, 2, 7, 3, 7]), 7) == [2, 1, 1]


def test_packed_dual_rows_have_the_loss_of_the_padded_batch(tiny):
    from fusionrs.train.vlm.model import load_model
    from fusionrs.train.vlm.packing import forward_packed, pack, rope_index_for

    processor, model = processor_of(tiny["qwen2_5_vl"]), load_model(tiny["qwen2_5_vl"]).eval()
    examples = [encode_example(processor, [picture(56, 56 + 28 * i, i, True), picture(56, 56, 9 + i)],
                               INSTRUCTIONS_RGB_IR[task], answer)
                for i, (task, answer) in enumerate([("caption", "bright roofs and dark water"), ("scene", "harbor")])]
    row = pack(examples, rope_index_for(model))
    assert row["image_grid_thw"].shape == (4, 3)
    with torch.no_grad():
        packed = forward_packed(model, row).loss
        padded = model(**collate(examples, processor.tokenizer.pad_token_id), use_cache=False).loss
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=0)


def test_generation_batches_dual_rows(tiny):
    from fusionrs.train.vlm.model import load_model

    for kind in ("qwen2_5_vl", "llava"):
        processor, model = processor_of(tiny[kind]), load_model(tiny[kind]).eval()
        inputs = generation_inputs(processor, [[picture(40, 60, 0, True), picture(40, 60, 1)],
                                               [picture(56, 56, 2, True), picture(56, 56, 3)]],
                                   [INSTRUCTIONS_RGB_IR["caption"], INSTRUCTIONS_RGB_IR["scene"]])
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        assert out.shape[0] == 2 and out.shape[1] > inputs["input_ids"].shape[1]


def test_instruction_and_eval_rows_carry_both_images_and_name_both():
    from fusionrs.eval.vlm_eval import eval_items

    batch = {"sample_id": ["s1"], "source": ["rsicd"], "caption": ["a runway near buildings"],
             "ir_aware_caption": ["a bright runway with high contrast edges"], "class_name": ["airport"],
             "rgb_jpeg": [b"RGB"], "ir_jpeg": [b"IR"]}
    rows = instruction_rows(batch, "B-iraware", inputs="rgb+ir")
    assert set(rows["instruction"]) <= set(INSTRUCTIONS_RGB_IR.values()) and rows["rgb_jpeg"][0] == b"RGB"
    assert rows["ir_jpeg"][0] == b"IR"
    ir_only = instruction_rows({k: v for k, v in batch.items() if k != "rgb_jpeg"}, "B-iraware")
    assert "rgb_jpeg" not in ir_only and set(ir_only["instruction"]) <= set(INSTRUCTIONS.values())
    items = eval_items(batch, inputs="rgb+ir")
    assert items["rgb_image"] == [b"RGB"] * len(items["task"]) and items["image"][0] == b"IR"
    assert items["instruction"][0] == INSTRUCTIONS_RGB_IR[items["task"][0]]
    assert "rgb_image" not in eval_items(batch)


def test_inputs_is_checked_in_the_configs():
    from fusionrs.config import ConfigError, EvalConfig, VlmTrainConfig, load_config

    with pytest.raises(ConfigError, match="inputs"):
        load_config(REPO / "configs" / "vlm-demo.yaml", ["inputs=rgb"], cls=VlmTrainConfig)
    with pytest.raises(ConfigError, match="inputs"):
        load_config(None, ["data=d", "out=o", "vlm.model=m", "vlm.inputs.a=ir+rgb"], cls=EvalConfig)


@pytest.mark.slow
def test_dual_image_adapter_trains_on_ray_and_the_suite_shows_both_inputs(ray_local, demo_run, demo_build, tmp_path):
    """An RGB+IR adapter (one DDP worker, one epoch) and the demo's own IR-only adapter (recipe
    vlm-demo) on the demo's tiny Qwen2.5-VL, evaluated in one suite run: each is shown what it
    was trained with, and the table has both rows."""
    from fusionrs.config import EvalConfig, VlmTrainConfig, load_config
    from fusionrs.eval.suite import run_suite
    from fusionrs.train.vlm.model import TRAINED_WITH
    from fusionrs.train.vlm.step import train_vlm

    model = demo_run[0] / "tiny-qwen2_5_vl"
    adapters = {"ir": str(demo_run[0] / "train" / "vlm-demo" / "export" / "adapter")}
    cfg = load_config(REPO / "configs" / "vlm-demo.yaml",
                      [f"data={demo_build}", f"run.storage_path={tmp_path / 'runs'}", f"model.path={model}",
                       "run.name=vlm-dual", "optim.epochs=1", "inputs=rgb+ir", "run.num_workers=1",
                       "run.cpus_per_worker=1", "parallel.strategy=ddp"], cls=VlmTrainConfig)
    result, adapters["dual"] = train_vlm(cfg)
    assert result.metrics["loss"] < result.metrics["first_loss"]
    for name, inputs in (("ir", "ir"), ("dual", "rgb+ir")):
        assert json.loads((Path(adapters[name]) / TRAINED_WITH).read_text())["inputs"] == inputs
    cfg = load_config(None, [f"data={demo_build}", f"out={tmp_path / 'eval'}", f"vlm.model={model}",
                             "vlm.max_pixels=3136", "vlm.bootstrap=50", f"vlm.adapters.ir={adapters['ir']}",
                             f"vlm.adapters.dual={adapters['dual']}"], cls=EvalConfig)
    run_suite(cfg)
    results = json.loads((tmp_path / "eval" / "vlm_results.json").read_text())
    assert results["ir"]["inputs"] == "ir" and results["dual"]["inputs"] == "rgb+ir"
    assert results["ir"]["items"] == results["dual"]["items"] > 0
    assert results["dual"]["failed"] == 0
    table = (tmp_path / "eval" / "vlm_table.md").read_text()
    assert "| dual | RGB+IR |" in table and "| ir | IR |" in table
    predictions = [json.loads(line) for line in (tmp_path / "eval" / "vlm_predictions.jsonl").read_text().splitlines()]
    dual = [p for p in predictions if p["model"] == "dual"]
    assert dual and all(p["instruction"] in INSTRUCTIONS_RGB_IR.values() for p in dual)
