"""One Ray trainer for every model family (torchtitan's shape: shared components, a family step).

A family supplies a *step* class (train/clip/step.py, train/vlm/step.py): how to build its model,
turn a batch of rows into a loss, validate, and export. Everything else exists once, here:

- launch: Ray Train's TorchTrainer on `cfg.run.num_workers` workers (CPU with gloo, or GPUs);
- parallelism: DeepSpeed ZeRO 0-3 or DDP (`Engine`), bf16, gradient accumulation and clipping,
  torch's fused AdamW (`optim.fused`), torch.compile of the family's towers (`parallel.compile`);
- data: the family's Ray Dataset, shuffled per epoch (`shuffled_dataset`, `epoch_batches`);
- resume: rerunning the same `run.name` + `run.storage_path` continues from the last checkpoint,
  and a worker failure restarts from it (`run.max_failures`); the step counters, the best
  validation score and the run's first loss survive both;
- checkpoints every `run.checkpoint_every` optimizer steps and at the end of every epoch, with the
  family's export beside the resume state; metrics every `run.log_every` steps to the console, a
  JSONL file and TensorBoard (metrics.py).

    result = fit(cfg, ClipStep, train_ds, train_rows, val=val_ds)

Worker-side callbacks (`callbacks=`) see every step before it runs: tests inject failures and
probe restored weights with them, from their own side; no user config carries a test hook.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import ray
import ray.train
import ray.train.torch
import torch
from ray.train.torch import TorchTrainer

from fusionrs.config.train import LoaderConfig, TrainConfig
from fusionrs.core.ray_session import start_ray
from fusionrs.train.metrics import MetricsLog, MetricsTail


class Step(Protocol):
    """What a model family gives the trainer. Constructed in every worker: Step(cfg, context)."""

    micro_batch_size: int  # rows per worker and micro-step
    score_metric: str  # validation metric that ranks checkpoints ("" = the latest is best)
    throughput_unit: str  # "samples" or "tokens"
    checkpoint_frozen: bool  # False: frozen base weights stay out of checkpoints (LoRA)
    export_every_checkpoint: bool  # False: only at the end of each epoch

    @classmethod
    def rows_per_optimizer_step(cls, cfg) -> int: ...

    def build_model(self, device: torch.device) -> torch.nn.Module: ...

    def compile_targets(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        """Submodules that `parallel.compile` compiles in place ([] = not supported)."""

    def loss(self, model: torch.nn.Module, rows: dict, device: torch.device) -> tuple[torch.Tensor, dict, int]:
        """(loss, float metrics, units for throughput: samples or tokens)."""

    def after_optimizer_step(self, model: torch.nn.Module) -> None: ...

    def validate(self, model: torch.nn.Module, val, device: torch.device) -> dict: ...

    def export(self, engine: "Engine", out: Path, rank: int) -> None: ...


@dataclass
class TrainState:
    """What a checkpoint must carry besides weights and optimizer state."""

    micro_step: int = 0
    opt_step: int = 0
    epoch: int = 0  # epochs completed
    best_score: float = -math.inf
    first_loss: float = math.nan  # the run's first loss, kept across restarts


@dataclass
class StepInfo:
    """Passed to callbacks before each micro-step."""

    rank: int
    epoch: int
    micro_step: int
    opt_step: int
    first_of_attempt: bool  # the first step this worker process runs (after a start or restart)
    restored: bool  # this attempt began from a checkpoint
    model: torch.nn.Module  # unwrapped


# ---------------------------------------------------------------------------------------
# Driver side.


def fit(cfg: TrainConfig, step_cls: type, train: ray.data.Dataset, train_rows: int, *, val: ray.data.Dataset | None = None,
        context: dict | None = None, callbacks: list | tuple = ()) -> ray.train.Result:
    """Run (or resume) training on Ray Train; returns its Result."""
    world, step_rows = cfg.run.num_workers, step_cls.rows_per_optimizer_step(cfg)
    if train_rows < step_rows:
        raise ValueError(f"{train_rows} training rows < one optimizer step ({step_rows} rows over {world} workers)")
    context = {**(context or {}), "has_val": val is not None}
    datasets = {"train": train, **({"val": val} if val is not None else {})}
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg, "step_cls": step_cls, "train_rows": train_rows, "context": context,
                           "callbacks": list(callbacks)},
        scaling_config=ray.train.ScalingConfig(num_workers=world, use_gpu=cfg.run.use_gpu,
                                               resources_per_worker={"CPU": cfg.run.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=cfg.run.name, storage_path=cfg.run.storage_path,
            failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
            # Ranked by the validation score (end-of-epoch checkpoints; mid-epoch ones rank last),
            # else by step; Ray always keeps the latest too, which is what a restart resumes from.
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.run.num_to_keep or None,
                                                         checkpoint_score_attribute="checkpoint_score",
                                                         checkpoint_score_order="max")),
        # Only the training set is split across workers; rank 0 reads all of the validation set.
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        datasets=datasets,
    )
    if "://" in cfg.run.storage_path:
        return trainer.fit()
    with MetricsTail(cfg):  # one console line per log_every steps, from the run's metrics file
        return trainer.fit()


def start_ray_for(cfg: TrainConfig) -> None:
    """Ray for a training run (joined or started, quiet console; INFO lines to the run's logs)."""
    local = "://" not in cfg.run.storage_path
    start_ray(log_file=str(Path(cfg.run.storage_path) / cfg.run.name / "logs" / "ray.log") if local else None)


def shuffled_dataset(ds: ray.data.Dataset, rows: int, cfg: TrainConfig) -> ray.data.Dataset:
    """Small sets (< loader.materialize_below rows) are read once, in one seeded random order
    (so each worker's shard is a random subset), and kept; every epoch then reshuffles each shard
    in full (epoch_batches). Larger sets stream, their file order shuffled per epoch by the
    reader (dataset.load.read_dataset's shuffle_seed) and mixed by a local shuffle buffer."""
    if rows < cfg.loader.materialize_below:
        return ds.random_shuffle(seed=cfg.run.seed).materialize()
    return ds


def epoch_batches(shard, batch_size: int, epoch: int, seed: int, loader: LoaderConfig, rows_hint: int = 0):
    """One epoch of numpy batches from a dataset or a worker's shard, in an order that differs
    per epoch and is reproducible from (seed, epoch). The buffer covers the whole shard for
    materialized sets (a full per-epoch shuffle) and `loader.shuffle_buffer` rows otherwise."""
    buffer = max(loader.shuffle_buffer, rows_hint) if rows_hint < loader.materialize_below else loader.shuffle_buffer
    return shard.iter_batches(batch_size=batch_size, drop_last=True, batch_format="numpy",
                              local_shuffle_buffer_size=buffer or None,
                              local_shuffle_seed=(seed * 1_000_003 + epoch) % 2**31 if buffer else None)


def best_checkpoint(result: ray.train.Result, score_metric: str):
    """(checkpoint, metrics) of the end-of-epoch checkpoint with the best score (the latest when
    the family has none, or on ties: the first wins, as the official selection)."""
    epochs = sorted(((c, m) for c, m in (result.best_checkpoints or []) if m.get("end_of_epoch")),
                    key=lambda cm: cm[1]["opt_step"])
    if not epochs:
        return None, {}
    if not score_metric:
        return epochs[-1]
    return max(epochs, key=lambda cm: cm[1].get(score_metric, -math.inf))


# ---------------------------------------------------------------------------------------
# Worker side.


class Engine:
    """DeepSpeed (ZeRO 0-3) or DDP behind one interface: micro-step backward, optimizer steps at
    accumulation boundaries with clipping, checkpoint save/load of the training state."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, total_steps: int, micro_batch_size: int,
                 checkpoint_frozen: bool):
        self.cfg, self.accum = cfg, cfg.optim.grad_accum
        self.deepspeed = cfg.parallel.strategy == "deepspeed"
        self.checkpoint_frozen = checkpoint_frozen
        self.micro = 0
        if self.deepspeed:
            _one_dim_scalars(model)
        opt = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                fused=cfg.optim.fused or None)
        warmup = math.ceil(cfg.optim.warmup_ratio * total_steps) if cfg.optim.warmup_ratio else cfg.optim.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(warmup, total_steps))
        if self.deepspeed:
            import deepspeed  # heavy (C++ op loaders); only the DeepSpeed strategy needs it

            ds_cfg = {"train_micro_batch_size_per_gpu": micro_batch_size, "gradient_accumulation_steps": self.accum,
                      "zero_optimization": {"stage": cfg.parallel.zero_stage}, "bf16": {"enabled": cfg.parallel.bf16},
                      "gradient_clipping": cfg.optim.grad_clip, "steps_per_print": 10 ** 9}
            # A client optimizer (torch AdamW) keeps DeepSpeed's fused-Adam C++ build out of the way.
            self.ds, self.opt, _, self.sched = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched,
                                                                    config=ds_cfg, dist_init_required=False)
            self.module = self.ds.module
        else:
            self.ds, self.opt, self.sched = None, opt, sched
            self.wrapped = ray.train.torch.prepare_model(model)
            self.module = self.wrapped.module if hasattr(self.wrapped, "module") else self.wrapped

    def train(self, mode: bool = True) -> None:
        (self.ds or self.wrapped).train(mode)

    def at_boundary(self) -> bool:
        return (self.micro + 1) % self.accum == 0

    def backward_and_step(self, loss: torch.Tensor) -> float | None:
        """One micro-step; returns the gradient norm when an optimizer step was taken."""
        boundary = self.at_boundary()
        self.micro += 1
        if self.ds is not None:
            self.ds.backward(loss)
            self.ds.step()  # DeepSpeed applies the optimizer at the accumulation boundary
            return float(self.ds.get_global_grad_norm() or 0.0) if boundary else None
        sync = contextlib.nullcontext() if boundary or not hasattr(self.wrapped, "no_sync") else self.wrapped.no_sync()
        with sync:
            (loss / self.accum).backward()
        if not boundary:
            return None
        clip = self.cfg.optim.grad_clip or math.inf
        norm = float(torch.nn.utils.clip_grad_norm_(self.wrapped.parameters(), clip))
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return norm

    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def save(self, d: Path, rank: int) -> None:
        if self.ds is not None:  # every rank writes its ZeRO shards
            self.ds.save_checkpoint(str(d), tag="ds", exclude_frozen_parameters=not self.checkpoint_frozen)
        elif rank == 0:
            torch.save({"model": trainable_state(self.module, self.checkpoint_frozen), "opt": self.opt.state_dict(),
                        "sched": self.sched.state_dict()}, d / "train.pt")

    def load(self, d: Path) -> None:
        if self.ds is not None:
            self.ds.load_checkpoint(str(d), tag="ds", load_module_strict=self.checkpoint_frozen)
            return
        blob = torch.load(d / "train.pt", map_location="cpu", weights_only=True)
        self.module.load_state_dict(blob["model"], strict=self.checkpoint_frozen)
        self.opt.load_state_dict(blob["opt"])
        self.sched.load_state_dict(blob["sched"])


def train_loop(config: dict) -> None:
    cfg: TrainConfig = config["cfg"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    step = config["step_cls"](cfg, config["context"])
    torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank (DDP and DeepSpeed also broadcast them)
    model = step.build_model(device)
    if cfg.parallel.compile:  # in place (Module.compile): state_dict keys, checkpoints and exports unchanged
        for tower in step.compile_targets(model):
            tower.compile(mode=cfg.parallel.compile)
    micro_per_epoch = config["train_rows"] // (step.micro_batch_size * world)
    micro_per_epoch -= micro_per_epoch % cfg.optim.grad_accum  # whole accumulation windows, equal on every rank
    total_opt = micro_per_epoch * cfg.optim.epochs // cfg.optim.grad_accum
    engine = Engine(cfg, model, total_opt, step.micro_batch_size, step.checkpoint_frozen)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.parallel.bf16)

    state, restored = TrainState(), False
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            state = TrainState(**json.loads((Path(d) / "state.json").read_text()))
            engine.load(Path(d))
            engine.micro = state.micro_step
        restored = True
    log = MetricsLog(cfg, rank)

    def save_and_report(metrics: dict, end_of_epoch: bool) -> None:
        with tempfile.TemporaryDirectory() as d:
            engine.save(Path(d), rank)
            if rank == 0:
                (Path(d) / "state.json").write_text(json.dumps(asdict(state)))
            if end_of_epoch or step.export_every_checkpoint:
                step.export(engine, Path(d), rank)
            score = metrics.get(step.score_metric, -1.0) if step.score_metric else float(state.opt_step)
            ray.train.report({**metrics, "end_of_epoch": end_of_epoch, "opt_step": state.opt_step,
                              "checkpoint_score": float(score)}, checkpoint=ray.train.Checkpoint.from_directory(d))

    shard = ray.train.get_dataset_shard("train")
    val = ray.train.get_dataset_shard("val") if rank == 0 and config["context"].get("has_val") else None
    first_of_attempt, window_loss, window_units, window_t, value = True, [], 0, time.perf_counter(), math.nan
    step_s: list[float] = []
    for epoch in range(state.epoch, cfg.optim.epochs):
        engine.train()
        rows_hint = config["train_rows"] // world
        for i, rows in enumerate(epoch_batches(shard, step.micro_batch_size, epoch, cfg.run.seed + rank, cfg.loader,
                                               rows_hint)):
            if i >= micro_per_epoch:
                break  # equal micro-steps on every worker: the collectives must match
            if epoch * micro_per_epoch + i < state.micro_step:
                continue  # resumed mid-epoch: the checkpoint covers this micro-batch
            for cb in config["callbacks"]:
                cb(StepInfo(rank, epoch, state.micro_step, state.opt_step, first_of_attempt, restored, engine.module))
            first_of_attempt = False
            t0 = time.perf_counter()
            with autocast:
                loss, metrics, units = step.loss(engine.module, rows, device)
            norm = engine.backward_and_step(loss)
            state.micro_step += 1
            step_s.append(time.perf_counter() - t0)
            value = float(loss.detach())
            if math.isnan(state.first_loss):
                state.first_loss = value
            window_loss.append(value)
            window_units += units
            if norm is None:
                continue
            state.opt_step += 1
            step.after_optimizer_step(engine.module)
            if state.opt_step % cfg.run.log_every == 0:
                now = time.perf_counter()
                log.write(state.opt_step, {"loss": _mean(window_loss), "lr": engine.lr(), "grad_norm": norm,
                                           f"{step.throughput_unit}_per_s": window_units * world / (now - window_t),
                                           "epoch": epoch + i / max(1, micro_per_epoch), **metrics})
                window_loss, window_units, window_t = [], 0, now
            if state.opt_step % cfg.run.checkpoint_every == 0:
                save_and_report({"loss": value, "epoch": epoch, **metrics}, end_of_epoch=False)
        state.epoch = epoch + 1
        warm = step_s[2:] if len(step_s) > 4 else step_s  # skip first-step allocations and warm-up
        metrics = {"epoch": epoch + 1, "loss": _mean(window_loss) if window_loss else value,
                   "first_loss": state.first_loss, "step_s_median": _median(warm)}
        if val is not None:
            scores = step.validate(engine.module, val, device)
            metrics.update(scores)
            if step.score_metric in scores:
                state.best_score = max(state.best_score, scores[step.score_metric])
            log.write(state.opt_step, scores, prefix="val/")
        metrics["best_score"] = state.best_score if state.best_score > -math.inf else None
        save_and_report(metrics, end_of_epoch=True)
        step_s = []
    log.close()


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters; no weight decay on biases, norms and scalars (ndim < 2)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]  # ZeRO drops empty groups; the scheduler must see the same ones


def warmup_cosine(warmup: int, total: int):
    """The official CLIP schedule: linear warmup max(1e-8, step/warmup), then cosine to 0 at `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return max(1e-8, step / max(1, warmup))
        p = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
    return factor


def trainable_state(model: torch.nn.Module, everything: bool) -> dict[str, torch.Tensor]:
    """The state to checkpoint: all of it, or only trainable tensors (a frozen 7B base is not
    copied into every checkpoint)."""
    if everything:
        return model.state_dict()
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in names}


def _one_dim_scalars(model: torch.nn.Module) -> None:
    """DeepSpeed's broadcast of the initial weights cannot view 0-dim tensors (e.g. open_clip's
    logit_scale) on gloo: give them one dimension (exports turn them back into scalars)."""
    for name, p in list(model.named_parameters()):
        if p.ndim == 0:
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(owner, name.rsplit(".", 1)[-1], torch.nn.Parameter(p.detach().reshape(1)))


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _median(xs: list[float]) -> float:
    return float(sorted(xs)[len(xs) // 2]) if xs else math.nan

