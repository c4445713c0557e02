"""LoRA instruction tuning of a VLM on Ray Train (TorchTrainer) with DeepSpeed ZeRO-2/3.

- Data: the build's Parquet through Ray Data — read, keep the IR-aware subset of the split,
  expand into instruction rows (instructions.py), shuffle — streamed to each worker with
  `get_dataset_shard`. Chat rendering and the processor (image patches, tokens, labels) run in the
  worker: they are tied to the model's processor and cheap next to a 7B forward/backward.
- Model: transformers + peft; LoRA on the language model's attention and MLP projections only
  (model.LORA_TARGETS); gradient checkpointing; assistant-only labels (chat.py).
- Optimisation: DeepSpeed with a client AdamW over the LoRA parameters (no C++ op build),
  micro-batch × accumulation, gradient clipping, cosine schedule with warmup ratio, bf16.
- Checkpoints every `checkpoint_every` optimizer steps and at the end of each epoch: the DeepSpeed
  state without the frozen base weights (a 7B base is not copied into every checkpoint), the
  step counters, and the peft adapter + processor (`adapter/`, loads with
  `PeftModel.from_pretrained`). Rerunning the same `name` + `storage_path` resumes; a worker
  failure restarts from the last checkpoint (`max_failures`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, _choice, _positive, _range
from .instructions import SETTINGS, TASKS
from .model import LORA_TARGETS


@dataclass(kw_only=True)
class VlmTrainConfig:
    data: str  # the build's output URI (its triplets/ are read)
    name: str = "vlm-run"  # Ray Train run name: same name + storage_path = resume
    storage_path: str = "out/train"  # local path or s3://bucket/prefix
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"  # a Hugging Face model folder: local path or s3:// URI
    setting: str = "B-iraware"  # A-original | B-iraware | C-mixed
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    lora_r: int = 32  # paper: r=32, α=64; the official adapters: r=16, α=32 (recipe vlm-official-r16)
    lora_alpha: int = 64
    lora_dropout: float = 0.05
    lora_targets: str = LORA_TARGETS
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    epochs: int = 1
    micro_batch_size: int = 1  # per worker
    grad_accum: int = 8
    zero_stage: int = 2  # 2 or 3
    bf16: bool = True
    gradient_checkpointing: bool = True
    # "flash_attention_2" (needs the flash-attn package, GPU): Qwen2.5-VL's vision tower then runs
    # its windowed attention as one variable-length call per layer; with "sdpa" transformers issues
    # one call per window per image (25 windows at 512 px, in 28 of the 32 vision layers).
    attn_implementation: str = "sdpa"
    grad_clip: float = 1.0
    max_pixels: int = 401_408  # Qwen image budget (512·28·28), as the official run
    min_pixels: int = 0  # 0: the processor's own
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    checkpoint_every: int = 500  # optimizer steps
    max_failures: int = 1
    seed: int = 42
    fail_at_step: int = 0  # tests: raise once at this optimizer step, to exercise restart-from-checkpoint

    def validate(self) -> None:
        _choice("setting", self.setting, SETTINGS)
        _choice("zero_stage", str(self.zero_stage), ("2", "3"))
        _choice("attn_implementation", self.attn_implementation, ("sdpa", "eager", "flash_attention_2"))
        for t in self.tasks:
            _choice("tasks[]", t, TASKS)
        if not self.tasks:
            raise ConfigError("tasks: at least one task is required")
        _positive("train", lora_r=self.lora_r, lora_alpha=self.lora_alpha, epochs=self.epochs,
                  micro_batch_size=self.micro_batch_size, grad_accum=self.grad_accum, num_workers=self.num_workers,
                  checkpoint_every=self.checkpoint_every)
        _range("lr", self.lr, 0, 1)
        _range("lora_dropout", self.lora_dropout, 0, 1)
        _range("warmup_ratio", self.warmup_ratio, 0, 1)
        if not self.data:
            raise ConfigError("data: the build output URI is required")


def cosine_with_warmup(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        p = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
    return f


def plan_steps(train_rows: int, cfg: VlmTrainConfig, world: int) -> tuple[int, int]:
    """(micro-steps per epoch, optimizer steps in all): equal on every worker (the collectives
    must match), a whole number of accumulation windows."""
    micro = train_rows // (cfg.micro_batch_size * world)
    micro -= micro % cfg.grad_accum
    return micro, micro * cfg.epochs // cfg.grad_accum


def train_loop(config: dict) -> None:
    import deepspeed
    import ray.train
    import torch

    from .chat import collate, decode_image, encode_example
    from .model import add_lora, load_model, load_processor

    cfg = VlmTrainConfig(**config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)  # same LoRA init on every rank
    processor = load_processor(cfg.model, cfg.max_pixels, cfg.min_pixels)
    model = load_model(cfg.model, dtype="bfloat16" if cfg.bf16 else "float32", attn_implementation=cfg.attn_implementation)
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    micro_per_epoch, total_opt = plan_steps(config["train_rows"], cfg, world)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(math.ceil(cfg.warmup_ratio * total_opt), total_opt))
    ds_cfg = {"train_micro_batch_size_per_gpu": cfg.micro_batch_size, "gradient_accumulation_steps": cfg.grad_accum,
              "zero_optimization": {"stage": cfg.zero_stage}, "bf16": {"enabled": cfg.bf16},
              "gradient_clipping": cfg.grad_clip, "steps_per_print": 10 ** 9}
    engine, opt, _, sched = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched, config=ds_cfg,
                                                 dist_init_required=False)
    peft_model = engine.module
    device = engine.device

    micro, opt_step, epoch0, first_loss = 0, 0, 0, float("nan")
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            state = json.loads((Path(d) / "state.json").read_text())
            micro, opt_step, epoch0 = state["micro_step"], state["opt_step"], state["epoch"]
            first_loss = state.get("first_loss", first_loss)  # the run's, not the restart's
            engine.load_checkpoint(d, tag="ds", load_module_strict=False)  # frozen base weights are not in it

    def save_adapter(d: Path) -> None:
        params = [p for p in peft_model.parameters() if p.requires_grad]
        if cfg.zero_stage == 3:  # partitioned: gather the LoRA weights on every rank, rank 0 writes
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                if rank == 0:
                    peft_model.save_pretrained(d / "adapter")
        elif rank == 0:
            peft_model.save_pretrained(d / "adapter")
        if rank == 0:
            processor.save_pretrained(d / "adapter")

    def save_and_report(metrics: dict, epoch: int) -> None:
        with tempfile.TemporaryDirectory() as d:
            engine.save_checkpoint(d, tag="ds", exclude_frozen_parameters=True)  # every rank: its shards
            save_adapter(Path(d))
            if rank == 0:
                (Path(d) / "state.json").write_text(json.dumps({"micro_step": micro, "opt_step": opt_step,
                                                                "epoch": epoch, "first_loss": first_loss}))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    shard = ray.train.get_dataset_shard("train")
    failed_once = Path(config["fail_marker"]) if config.get("fail_marker") else None
    losses: list[float] = []
    for epoch in range(epoch0, cfg.epochs):
        engine.train()
        step_s, step_tokens = [], []
        it = shard.iter_batches(batch_size=cfg.micro_batch_size, drop_last=True, batch_format="numpy")
        for i, rows in enumerate(it):
            if i >= micro_per_epoch:
                break
            if epoch * micro_per_epoch + i < micro:
                continue  # resumed: the checkpoint covers this micro-batch
            if (cfg.fail_at_step and opt_step == cfg.fail_at_step and failed_once and not failed_once.exists()):
                failed_once.write_text("x")
                raise RuntimeError(f"injected failure at optimizer step {opt_step}")
            t = time.perf_counter()
            batch = collate([encode_example(processor, decode_image(img), ins, resp) for img, ins, resp in
                             zip(rows["ir_jpeg"], rows["instruction"], rows["response"])],
                            processor.tokenizer.pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            if cfg.bf16 and "pixel_values" in batch:
                batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()  # DeepSpeed applies the optimizer at the accumulation boundary
            micro += 1
            step_tokens.append(int(batch["attention_mask"].sum()))
            losses.append(loss.item())
            if math.isnan(first_loss):
                first_loss = losses[0]
            step_s.append(time.perf_counter() - t)
            if micro % cfg.grad_accum == 0:
                opt_step += 1
                if opt_step % cfg.checkpoint_every == 0:
                    save_and_report({"opt_step": opt_step, "epoch": epoch, "loss": _mean(losses[-cfg.grad_accum * 10:])},
                                    epoch)
        warm = slice(2, None) if len(step_s) > 4 else slice(None)  # skip first-step allocations and warm-up
        save_and_report({"opt_step": opt_step, "epoch": epoch + 1, "loss": _mean(losses[-cfg.grad_accum * 10:]),
                         "first_loss": first_loss,
                         "micro_step_s_median": _median(step_s[warm]),
                         # Tokens (prompt, image and response) per second of micro-step time.
                         "tokens_per_s_per_worker": sum(step_tokens[warm]) / max(sum(step_s[warm]), 1e-9)},
                        epoch + 1)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _median(xs: list[float]) -> float:
    return float(sorted(xs)[len(xs) // 2]) if xs else float("nan")


INSTRUCTION_COLUMNS = ["sample_id", "source", "split", "caption", "ir_aware_caption", "ir_caption_status",
                       "class_name", "ir_jpeg", "is_eval_representative"]


def instruction_dataset(triplets_uri: str, split: str, setting: str, tasks, storage, eval_only: bool = False,
                        images: bool = True):
    """Ray Data instruction rows from the build's triplets: the IR-aware subset of one split.
    `images=False` leaves the JPEG column unread: the same rows, cheap to count."""
    import functools

    import ray

    from .instructions import instruction_rows

    fs, path = storage.resolve(triplets_uri)
    columns = INSTRUCTION_COLUMNS if images else [c for c in INSTRUCTION_COLUMNS if c != "ir_jpeg"]
    ds = ray.data.read_parquet(path, filesystem=fs, columns=columns)
    ds = ds.filter(functools.partial(in_ir_aware_subset, split=split, eval_only=eval_only))
    return ds.map_batches(instruction_rows, fn_kwargs={"setting": setting, "tasks": tuple(tasks)},
                          batch_format="numpy", batch_size=64)


def in_ir_aware_subset(row: dict, split: str, eval_only: bool) -> bool:
    """A row of `split` with an accepted IR-aware caption (one per group when eval_only)."""
    if row["split"] != split or row["ir_caption_status"] != "accepted":
        return False
    return bool(row["is_eval_representative"]) or not eval_only


def train_vlm(cfg: VlmTrainConfig, storage=None):
    """Run (or resume) training; returns the Ray Train result and where the adapter is."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from ..storage import Storage

    cfg.validate()
    for k in ("data", "storage_path", "model"):
        v = getattr(cfg, k)
        if v and "://" not in v and os.path.exists(v) and not os.path.isabs(v):
            setattr(cfg, k, os.path.abspath(v))  # workers run elsewhere: the driver's paths
    storage = storage or Storage(s3_endpoint=os.environ.get("AWS_ENDPOINT_URL", ""))
    triplets = cfg.data.rstrip("/") + "/triplets"
    # Counted from the text columns (the step plan needs the count before training starts). Large
    # sets then stream with their images, block order shuffled per epoch: no copy of every JPEG
    # in the object store (2.4M instruction rows at the paper's scale).
    rows = instruction_dataset(triplets, "train", cfg.setting, cfg.tasks, storage, images=False).count()
    ds = instruction_dataset(triplets, "train", cfg.setting, cfg.tasks, storage)
    small = rows < 200_000
    if small:  # a full shuffle holds every row in the object store anyway: read once, not per epoch
        ds = ds.materialize()
    if rows < cfg.micro_batch_size * cfg.num_workers * cfg.grad_accum:
        raise ValueError(f"{rows} instruction rows for setting {cfg.setting} < one optimizer step "
                         f"({cfg.micro_batch_size} x {cfg.num_workers} workers x {cfg.grad_accum} accumulation)")
    marker = os.path.join(tempfile.gettempdir(), f"fusionrs-{cfg.name}-failed-once") if cfg.fail_at_step else ""
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": dataclasses.asdict(cfg), "train_rows": rows, "fail_marker": marker},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                               resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=ray.train.RunConfig(name=cfg.name, storage_path=_storage_path(cfg.storage_path),
                                       failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures)),
        datasets={"train": ds.random_shuffle(seed=cfg.seed) if small else ds.randomize_block_order(seed=cfg.seed)},
    )
    result = trainer.fit()
    return result, export_adapter(result, cfg)


def export_adapter(result, cfg: VlmTrainConfig, storage=None) -> str:
    """Copy the last checkpoint's adapter (+ processor) to <storage_path>/<name>/export/adapter
    (local folder or s3:// prefix), the place `jobs.evaluate --adapter` and users look for it."""
    import shutil

    from ..storage import Storage, join

    if result.checkpoint is None:
        raise RuntimeError(f"training run {cfg.name} reported no checkpoint")
    with result.checkpoint.as_directory() as d:
        src = Path(d) / "adapter"
        if "://" in cfg.storage_path:
            storage = storage or Storage(s3_endpoint=os.environ.get("AWS_ENDPOINT_URL", ""))
            dest = join(cfg.storage_path, cfg.name, "export", "adapter")
            for f in sorted(src.rglob("*")):
                if f.is_file():
                    storage.write_bytes(join(dest, f.relative_to(src).as_posix()), f.read_bytes())
            return dest
        out = Path(cfg.storage_path).resolve() / cfg.name / "export" / "adapter"
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(src, out)
        return str(out)


def _storage_path(p: str) -> str:
    return p if "://" in p else os.path.abspath(p)
