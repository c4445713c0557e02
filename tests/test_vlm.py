"""VLM LoRA tuning on the tiny Qwen2.5-VL: masking, LoRA targets, adapter round trip, 2-worker
DeepSpeed training with a restart, and the demo's run improving over the base model."""

import json
from pathlib import Path

import pytest
import torch

from fusionrs.train.vlm.chat import IGNORE, collate, encode_example
from fusionrs.train.vlm.instructions import INSTRUCTIONS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from fusionrs.dev.tiny_vlm import write_tiny_qwen2_5_vl

    return write_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tinyvlm") / "tiny-qwen2_5_vl")


@pytest.fixture(scope="module")
def processor(tiny_vlm):
    from fusionrs.train.vlm.model import load_processor

    return load_processor(tiny_vlm)


def image(v=120):
    from PIL import Image

    return Image.new("RGB", (72, 64), (v, v, v))


def test_tiny_model_is_a_real_hf_folder(tiny_vlm):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    files = {p.name for p in Path(tiny_vlm).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "chat_template.jinja"} <= files
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(AutoProcessor.from_pretrained(tiny_vlm)).__name__ == "Qwen2_5_VLProcessor"


def test_only_assistant_tokens_carry_labels(processor):
    response = "bright runway, dark grass"
    ex = encode_example(processor, image(), INSTRUCTIONS["caption"], response)
    ids, labels = ex["input_ids"], ex["labels"]
    supervised = labels != IGNORE
    assert bool((labels[supervised] == ids[supervised]).all())
    # The supervised tokens are exactly the response and its end-of-turn, nothing of the prompt.
    assert processor.tokenizer.decode(ids[supervised]) == response + "<|im_end|>"
    first, last = int(supervised.nonzero()[0]), int(supervised.nonzero()[-1])
    assert bool((~supervised[:first]).all()) and bool(supervised[first:last + 1].all())
    assert processor.tokenizer.decode(ids[last + 1:]) == "\n"  # the template's newline after <|im_end|>: no label
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (ids == image_token).sum() > 0 and not bool(supervised[ids == image_token].any())
    # Padding in a batch carries no labels either.
    other = encode_example(processor, image(60), INSTRUCTIONS["scene"], "airport")
    batch = collate([ex, other], processor.tokenizer.pad_token_id)
    pad_rows = batch["attention_mask"] == 0
    assert pad_rows.any() and bool((batch["labels"][pad_rows] == IGNORE).all())


def test_lora_targets_the_language_model_only(tiny_vlm):
    from fusionrs.train.vlm.model import add_lora, load_model

    model = add_lora(load_model(tiny_vlm), r=8, alpha=16, dropout=0.0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("language_model" in n and "lora_" in n for n in trainable)
    # Plain names would also have hit the vision tower's MLPs (as the official adapters did).
    assert any("visual" in n and n.endswith("mlp.down_proj") for n, _ in model.named_modules())
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert any(f"{proj}.lora_A" in n for n in trainable), proj


def test_adapter_save_and_reload_gives_identical_logits(tiny_vlm, processor, tmp_path):
    from fusionrs.train.vlm.model import add_lora, load_model

    torch.manual_seed(0)
    model = add_lora(load_model(tiny_vlm), r=8, alpha=16, dropout=0.0)
    batch = collate([encode_example(processor, image(), INSTRUCTIONS["caption"], "bright runway")],
                    processor.tokenizer.pad_token_id)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):  # LoRA B starts at zero: train a little so the adapter changes the logits
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    base = load_model(tiny_vlm).eval()
    with torch.no_grad():
        want = model(**batch).logits
        assert not torch.allclose(want, base(**batch).logits)
    model.save_pretrained(tmp_path / "adapter")
    reloaded = load_model(tiny_vlm, adapter=str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, want)


@pytest.mark.slow
def test_lora_restart_resumes_the_checkpoint_and_exports_an_adapter(ray_local, demo_build, tiny_vlm, tmp_path):
    """configs/vlm-demo.yaml (2 workers, DeepSpeed ZeRO-2) for three epochs with a worker failure
    injected in epoch 2: the run restarts from the epoch-1 checkpoint's LoRA weights,
    finishes every step, and exports an adapter that loads with PeftModel. (That the recipe's
    full run moves the answers toward the training captions is checked on the demo's own run:
    test_demo.py.)
    (ZeRO-3 — the adapter gathered from partitions — ran in the same test during development;
    it is out of CI for time: `zero_stage=3` below runs it.)"""
    from peft import PeftModel

    from fusionrs.config import VlmTrainConfig, load_config
    from fusionrs.core.storage import Storage
    from fusionrs.train.vlm.data import instruction_dataset
    from fusionrs.train.vlm.model import load_model
    from fusionrs.train.vlm.step import train_vlm
    from tests.faults import FailOnce, ProbeRestore, checkpoint_digest

    cfg = load_config(REPO / "configs" / "vlm-demo.yaml",
                      [f"data={demo_build}", f"run.storage_path={tmp_path / 'runs'}", f"model.path={tiny_vlm}",
                       "run.name=vlm-demo-test", "optim.epochs=3", "run.log_every=5"], cls=VlmTrainConfig)
    rows = instruction_dataset(str(demo_build), "train", cfg.setting, cfg.tasks, Storage(), images=False).count()
    per_rank = rows // (cfg.micro_batch_size * 2)  # optimizer steps per epoch
    probe = tmp_path / "probe"
    result, adapter = train_vlm(cfg, callbacks=[FailOnce(per_rank + 3, tmp_path / "failed"), ProbeRestore(probe)])
    assert (tmp_path / "failed").exists()  # it failed once, went on
    restored = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["opt_step"] == per_rank for r in restored), restored  # from the epoch-1 checkpoint
    assert all(r["digest"] == checkpoint_digest(result, per_rank) for r in restored)  # the checkpoint's LoRA weights
    assert result.metrics["opt_step"] == per_rank * cfg.optim.epochs and result.metrics["epoch"] == cfg.optim.epochs
    print({k: result.metrics[k] for k in ("first_loss", "loss")})
    assert result.metrics["loss"] < result.metrics["first_loss"] / 2  # the run's first loss, kept across the restart
    from tests.faults import tensorboard_scalars

    curve = tensorboard_scalars(Path(cfg.run.storage_path) / cfg.run.name / "metrics", "train/loss")
    assert len(curve) >= result.metrics["opt_step"] // cfg.run.log_every and curve[-1][1] < curve[0][1] / 2
    assert tensorboard_scalars(Path(cfg.run.storage_path) / cfg.run.name / "metrics", "train/tokens_per_s")
    model = PeftModel.from_pretrained(load_model(tiny_vlm), adapter)
    assert any(float(p.abs().sum()) > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_export_adapter_to_local_and_s3(s3_server, tmp_path):
    import types

    import boto3
    import ray.train

    from fusionrs.config import VlmTrainConfig, load_config
    from fusionrs.core.storage import Storage
    from fusionrs.train.vlm.step import export_adapter

    ckpt = tmp_path / "ckpt"
    (ckpt / "adapter" / "sub").mkdir(parents=True)
    (ckpt / "adapter" / "adapter_config.json").write_text("{}")
    (ckpt / "adapter" / "sub" / "w.bin").write_bytes(b"\x00\x01")
    result = types.SimpleNamespace(checkpoint=ray.train.Checkpoint.from_directory(str(ckpt)))
    local = export_adapter(result, load_config(None, ["data=x", "run.name=run", f"run.storage_path={tmp_path / 'runs'}"],
                                               cls=VlmTrainConfig), Storage())
    assert Path(local, "sub", "w.bin").read_bytes() == b"\x00\x01"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket="runs")
    storage = Storage(s3_endpoint=s3_server)
    uri = export_adapter(result, load_config(None, ["data=x", "run.name=run", "run.storage_path=s3://runs/vlm"],
                                             cls=VlmTrainConfig), storage)
    assert uri == "s3://runs/vlm/run/export/adapter"
    assert storage.read_bytes(uri + "/sub/w.bin") == b"\x00\x01" and storage.exists(uri + "/adapter_config.json")


def test_attention_implementation_reaches_the_model_and_bad_values_fail(tiny_vlm):
    from fusionrs.config import ConfigError, VlmTrainConfig, load_config
    from fusionrs.train.vlm.model import load_model

    with pytest.raises(ConfigError, match="model.attn_implementation"):
        load_config(None, ["data=x", "model.attn_implementation=flash"], cls=VlmTrainConfig)
    model = load_model(tiny_vlm, attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    assert model.config.vision_config._attn_implementation == "eager"  # the vision tower's windows too
