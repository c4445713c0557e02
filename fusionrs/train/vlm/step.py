"""LoRA instruction tuning of a VLM for the trainer: the step (model + LoRA, chat encoding with
assistant-only labels, adapter export) and the driver entry `train_vlm`.

    python -m jobs.train_vlm --config configs/vlm-demo.yaml

- Data: instruction rows from the build's IR-aware subset (data.py); `inputs: rgb+ir` gives each
  row the RGB image and its IR image (chat.model_view: two images, or side by side). Chat rendering and the
  processor (image patches, tokens, labels) run in the worker: they are tied to the model's
  processor and cheap next to a 7B forward/backward.
- Model: transformers + peft; LoRA on the language model's attention and MLP projections only
  (model.LORA_TARGETS); gradient checkpointing; assistant-only labels (chat.py).
- Checkpoints carry the training state without the frozen base weights (a 7B base is not copied
  into every checkpoint) and the peft adapter + processor (`adapter/`, loads with
  `PeftModel.from_pretrained`), with TRAINED_WITH recording the inputs, setting and tasks (the
  evaluation shows the adapter what it was trained on); the last one is exported to
  <run>/export/adapter.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from fusionrs.config.train import VlmTrainConfig
from fusionrs.core.storage import Storage, join
from fusionrs.train.trainer import Engine, fit, shuffled_dataset, start_ray_for
from fusionrs.train.vlm.chat import collate, decode_image, encode_example
from fusionrs.train.vlm.data import instruction_dataset
from fusionrs.train.vlm.model import LORA_TARGETS, TRAINED_WITH, add_lora, load_model, load_processor
from fusionrs.train.vlm.packing import pack, rope_index_for


def row_images(rows: dict, i: int) -> list:
    """Row i's images in the order the model sees them: RGB then IR, or IR alone."""
    keys = ("rgb_jpeg", "ir_jpeg") if "rgb_jpeg" in rows else ("ir_jpeg",)
    return [decode_image(rows[k][i]) for k in keys]


class VlmStep:
    score_metric = ""  # no validation pass during training (as the official run): the last is kept
    throughput_unit = "tokens"
    checkpoint_frozen = False  # only the LoRA weights train
    export_every_checkpoint = True  # the adapter is small: every checkpoint carries one

    def __init__(self, cfg: VlmTrainConfig, context: dict):
        self.cfg = cfg
        self.micro_batch_size = cfg.micro_batch_size
        self.processor = load_processor(cfg.model.path, cfg.model.max_pixels, cfg.model.min_pixels)
        self.rope_index = None  # packing: the model's own position function, found on the first step

    @classmethod
    def rows_per_optimizer_step(cls, cfg: VlmTrainConfig) -> int:
        return cfg.micro_batch_size * cfg.run.num_workers * cfg.optim.grad_accum

    def build_model(self, device: torch.device) -> torch.nn.Module:
        m = self.cfg.model
        model = load_model(m.path, dtype="bfloat16" if self.cfg.parallel.bf16 else "float32",
                           attn_implementation=m.attn_implementation)
        # No KV cache in training. transformers 5 reads it from the text config (setting it on the
        # top config is silently ignored; with packing the cache would let attention cross samples).
        for c in (model.config, getattr(model.config, "text_config", None)):
            if c is not None:
                c.use_cache = False
        if m.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        lora = self.cfg.lora
        return add_lora(model, lora.r, lora.alpha, lora.dropout, lora.targets or LORA_TARGETS).to(device)

    def loss(self, model, rows: dict, device):
        examples = [encode_example(self.processor, row_images(rows, i), ins, resp)
                    for i, (ins, resp) in enumerate(zip(rows["instruction"], rows["response"]))]
        if self.cfg.packing:  # one padding-free row per micro-step (packing.py): the same loss, no pad tokens
            self.rope_index = self.rope_index or rope_index_for(model)
            batch = pack(examples, self.rope_index)
        else:
            batch = collate(examples, self.processor.tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        if self.cfg.parallel.bf16 and "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
        # Tokens (prompt, image and response) for tokens/s: every token of a pack is a real one.
        tokens = int(batch["input_ids"].numel()) if self.cfg.packing else int(batch["attention_mask"].sum())
        return model(**batch, use_cache=False).loss, {}, tokens

    def compile_targets(self, model) -> list:
        return []  # parallel.compile is refused for VLMs (config/train.py)

    def after_optimizer_step(self, model) -> None:
        pass

    def validate(self, model, val, device) -> dict:
        return {}

    def export(self, engine: Engine, out: Path, rank: int) -> None:
        model = engine.module
        params = [p for p in model.parameters() if p.requires_grad]
        if self.cfg.parallel.strategy == "deepspeed" and self.cfg.parallel.zero_stage == 3:
            import deepspeed  # heavy; ZeRO-3 only (the trainer's Engine has already loaded it)

            # Partitioned: gather the LoRA weights on every rank (a collective), rank 0 writes.
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                if rank == 0:
                    model.save_pretrained(out / "adapter")
        elif rank == 0:
            model.save_pretrained(out / "adapter")
        if rank == 0:
            self.processor.save_pretrained(out / "adapter")
            record = {"inputs": self.cfg.inputs, "setting": self.cfg.setting, "tasks": list(self.cfg.tasks),
                      "base": self.cfg.model.path}
            (out / "adapter" / TRAINED_WITH).write_text(json.dumps(record, indent=1) + "\n")


def train_vlm(cfg: VlmTrainConfig, storage: Storage | None = None, callbacks=()):
    """Run (or resume) training; returns the Ray Train result and where the adapter is."""
    storage = storage or Storage.from_env()
    start_ray_for(cfg)
    # Counted from the text columns (the step plan needs the count before training starts).
    rows = instruction_dataset(cfg.data, "train", cfg.setting, cfg.tasks, storage, images=False).count()
    streaming = rows >= cfg.loader.materialize_below
    ds = instruction_dataset(cfg.data, "train", cfg.setting, cfg.tasks, storage, inputs=cfg.inputs,
                             shuffle_seed=cfg.run.seed if streaming and cfg.loader.shuffle_files else None)
    result = fit(cfg, VlmStep, shuffled_dataset(ds, rows, cfg), rows, callbacks=callbacks)
    return result, export_adapter(result, cfg, storage)


def export_adapter(result, cfg: VlmTrainConfig, storage: Storage) -> str:
    """Copy the last checkpoint's adapter (+ processor) to <storage_path>/<name>/export/adapter
    (local folder or remote prefix), where `jobs.evaluate` and users look for it."""
    if result.checkpoint is None:
        raise RuntimeError(f"training run {cfg.run.name} reported no checkpoint")
    dest = join(cfg.run.storage_path, cfg.run.name, "export", "adapter")
    with result.checkpoint.as_directory() as d:
        src = Path(d) / "adapter"
        if storage.is_local(dest):
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(src, dest)
        else:
            for f in sorted(src.rglob("*")):
                if f.is_file():
                    storage.write_bytes(join(dest, f.relative_to(src).as_posix()), f.read_bytes())
    return dest
