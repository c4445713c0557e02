"""Tri-modal CLIP training on Ray Train (TorchTrainer), DeepSpeed or DDP, CPU (gloo) or GPU.

- Data: the build's Parquet through Ray Data; preprocessing on CPU workers, streamed to each
  trainer with `get_dataset_shard`.
- Strategy: DeepSpeed (ZeRO stage, bf16) by default, DDP as an option. A client optimizer
  (torch AdamW) keeps DeepSpeed's C++ op builds out of the way.
- Checkpoints every `checkpoint_every` steps to `storage_path` (local or S3): rerunning the same
  `name` + `storage_path` resumes; `max_failures` restarts from the last checkpoint.
- Validation retrieval each epoch on rank 0 over the full val split; the best Mean R is
  exported as an open_clip checkpoint (`best.pt`, loads with open_clip.create_model(name,
  pretrained=...)), separate from the resume checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, _choice, _positive, _range


@dataclass(kw_only=True)
class ClipTrainConfig:
    data: str  # the build's output URI (its triplets/ are read)
    name: str = "clip-run"  # Ray Train run name: same name + storage_path = resume
    storage_path: str = "out/train"  # local path or s3://bucket/prefix
    model: str = "ViT-B-32"
    pretrained: str = ""  # open_clip tag (downloads) or a checkpoint file (local or s3://)
    model_config: str = ""  # JSON config for a model open_clip does not know (e.g. the tiny debug model)
    quick_gelu: bool = False  # OpenAI weights: the -quickgelu variants
    setting: str = "580k-only"  # 580k-only | A-original | B-iraware | C-mixed
    rgb_ir_weight: float = 1.0
    lr: float = 5e-6
    weight_decay: float = 0.1
    warmup_steps: int = 500
    epochs: int = 3
    batch_size: int = 128  # per worker; negatives are global (all workers' batches)
    num_workers: int = 2
    use_gpu: bool = False
    strategy: str = "deepspeed"  # deepspeed | ddp
    zero_stage: int = 2
    bf16: bool = False
    grad_clip: float = 1.0
    checkpoint_every: int = 500
    max_failures: int = 1
    seed: int = 42
    eval_batch_size: int = 256
    cpus_per_worker: float = 1.0
    fail_at_step: int = 0  # tests: raise once at this step, to exercise restart-from-checkpoint

    def validate(self) -> None:
        from .loss import SETTINGS

        _choice("setting", self.setting, SETTINGS)
        _choice("strategy", self.strategy, ("deepspeed", "ddp"))
        _choice("zero_stage", str(self.zero_stage), ("0", "1", "2", "3"))
        _positive("train", epochs=self.epochs, batch_size=self.batch_size, num_workers=self.num_workers,
                  checkpoint_every=self.checkpoint_every)
        _range("lr", self.lr, 0, 1)
        if not self.data:
            raise ConfigError("data: the build output URI is required")


def lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:  # official schedule: linear warmup, then cosine to 0
        if step < warmup:
            return max(1e-8, step / max(1, warmup))
        p = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
    return f


def encode(model, batch: dict, device) -> dict:
    import torch

    out = {}
    for k in ("rgb", "ir"):
        if k in batch:
            out[k] = model.encode_image(torch.as_tensor(batch[k], device=device))
    for k in ("text", "text_ir"):
        if k in batch:
            out[k] = model.encode_text(torch.as_tensor(batch[k], device=device))
    return out


def needed(setting: str) -> tuple[str, ...]:
    return {"580k-only": ("rgb", "ir", "text"), "A-original": ("ir", "text"), "B-iraware": ("ir", "text_ir"),
            "C-mixed": ("rgb", "ir", "text", "text_ir")}[setting]


def train_loop(config: dict) -> None:
    import ray.train
    import torch

    from ..evaluation.retrieval import six_directions
    from .loss import trimodal_loss
    from .model import create_clip, export_open_clip

    cfg = ClipTrainConfig(**config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed + rank)
    device = ray.train.torch.get_device()
    model, _, _ = create_clip(cfg.model, cfg.pretrained, cfg.model_config, cfg.quick_gelu)
    steps_per_epoch = max(1, config["train_rows"] // (cfg.batch_size * world))
    total = steps_per_epoch * cfg.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]  # biases, norms, logit scale: no weight decay
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.warmup_steps, total))
    if cfg.strategy == "deepspeed":
        import deepspeed

        # DeepSpeed's broadcast of the initial weights cannot view 0-dim tensors (open_clip's
        # logit_scale) on gloo: give them one dimension; the export turns them back into scalars.
        for name, p in list(model.named_parameters()):
            if p.ndim == 0:
                mod = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
                setattr(mod, name.rsplit(".", 1)[-1], torch.nn.Parameter(p.detach().reshape(1)))
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                                 {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.warmup_steps, total))

        ds_cfg = {"train_micro_batch_size_per_gpu": cfg.batch_size, "gradient_accumulation_steps": 1,
                  "zero_optimization": {"stage": cfg.zero_stage}, "bf16": {"enabled": cfg.bf16},
                  "gradient_clipping": cfg.grad_clip, "steps_per_print": 10 ** 9}
        engine, opt, _, sched = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched, config=ds_cfg,
                                                     dist_init_required=False)
        net, unwrapped = engine, engine.module
    else:
        net = ray.train.torch.prepare_model(model)
        unwrapped = net.module if hasattr(net, "module") else net
    dtype = torch.bfloat16 if (cfg.bf16 and cfg.strategy == "deepspeed") else torch.float32

    step, epoch0, best = 0, 0, -1.0
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            state = json.loads((Path(d) / "state.json").read_text())
            step, epoch0, best = state["step"], state["epoch"], state["best_mean_r"]
            if cfg.strategy == "deepspeed":
                engine.load_checkpoint(d, tag="ds")
            else:
                blob = torch.load(Path(d) / "train.pt", map_location="cpu", weights_only=True)
                unwrapped.load_state_dict(blob["model"])
                opt.load_state_dict(blob["opt"])
                sched.load_state_dict(blob["sched"])

    def save_and_report(metrics: dict, epoch: int, export: bool = False) -> None:
        with tempfile.TemporaryDirectory() as d:
            if cfg.strategy == "deepspeed":
                engine.save_checkpoint(d, tag="ds")  # every rank writes its ZeRO shards
            elif rank == 0:
                torch.save({"model": unwrapped.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()},
                           Path(d) / "train.pt")
            if rank == 0:
                (Path(d) / "state.json").write_text(json.dumps({"step": step, "epoch": epoch, "best_mean_r": best}))
                if export:  # the open_clip export, apart from the resume state
                    export_open_clip(unwrapped, Path(d) / "model.pt")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    shard = ray.train.get_dataset_shard("train")
    keys = needed(cfg.setting)
    failed_once = Path(config["fail_marker"]) if config.get("fail_marker") else None  # fail once, then resume
    for epoch in range(epoch0, cfg.epochs):
        net.train()
        t0, seen = time.perf_counter(), 0
        step_s, iter_s, t_iter = [], [], time.perf_counter()  # compute-only and whole-iteration times
        it = shard.iter_batches(batch_size=cfg.batch_size, drop_last=True, batch_format="numpy")
        for i, batch in enumerate(it):
            if i >= steps_per_epoch:
                break  # equal steps on every worker: the collectives must match
            if epoch * steps_per_epoch + i < step:
                continue  # resumed mid-epoch: skip what the checkpoint already covers
            if cfg.fail_at_step and step == cfg.fail_at_step and failed_once and not failed_once.exists():
                failed_once.write_text("x")
                raise RuntimeError(f"injected failure at step {step}")
            t_step = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                feats = encode(unwrapped, {k: batch[k] for k in keys}, device)
                loss, parts = trimodal_loss(feats, unwrapped.logit_scale, cfg.setting, cfg.rgb_ir_weight)
            if cfg.strategy == "deepspeed":
                engine.backward(loss)
                engine.step()
            else:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
            with torch.no_grad():
                unwrapped.logit_scale.clamp_(0, math.log(100))  # the official code did not clamp
            step += 1
            seen += cfg.batch_size * world
            now = time.perf_counter()
            step_s.append(now - t_step)
            iter_s.append(now - t_iter)
            t_iter = now
            if step % cfg.checkpoint_every == 0:
                save_and_report({"step": step, "epoch": epoch, "loss": float(loss), **parts,
                                 "samples_per_s": seen / (time.perf_counter() - t0)}, epoch)
        # End of epoch: validation retrieval on rank 0, best export, a checkpoint.
        metrics = {"step": step, "epoch": epoch + 1, "loss": float(loss) if seen else float("nan"),
                   # Medians skip the first step (first-call allocations, DeepSpeed warm-up).
                   "step_s_median": _median(step_s[1:] or step_s), "iter_s_median": _median(iter_s[1:] or iter_s)}
        if rank == 0 and config.get("val_rows"):
            val = embed_rows(unwrapped, config["val_rows"], device)
            r = six_directions(val["emb"], val["sample_id"], val["caption_key"])
            metrics.update(val_mean_r=r["mean_r"], val_mean_all=r["mean_all"])
            best = max(best, r["mean_r"])
        save_and_report({**metrics, "best_val_mean_r": best}, epoch + 1, export=True)


def _median(xs: list[float]) -> float:
    return float(sorted(xs)[len(xs) // 2]) if xs else float("nan")


def embed_rows(model, rows: dict, device, batch: int = 128) -> dict:
    """Embeddings of preprocessed rows (dict of numpy arrays)."""
    import numpy as np
    import torch

    model.eval()
    out = {"rgb": [], "ir": [], "text": []}
    with torch.no_grad():
        for s in range(0, len(rows["sample_id"]), batch):
            feats = encode(model, {k: rows[k][s:s + batch] for k in ("rgb", "ir", "text")}, device)
            for k in out:
                out[k].append(feats[k].float().cpu().numpy())
    model.train()
    return {"emb": {k: np.concatenate(v) for k, v in out.items()}, "sample_id": list(rows["sample_id"]),
            "caption_key": list(rows["caption_key"]), "source": list(rows["source"])}


def collect(ds) -> dict:
    import numpy as np

    parts = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def train_clip(cfg: ClipTrainConfig, build_storage=None):
    """Run (or resume) training; returns the Ray Train result and where the exports are."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from ..storage import Storage
    from .data import clip_dataset, count_rows
    from .model import create_clip

    cfg.validate()
    # Workers run elsewhere: relative local paths are the driver's, make them absolute once.
    for k in ("data", "storage_path", "model_config", "pretrained"):
        v = getattr(cfg, k)
        if v and "://" not in v and (os.path.sep in v or os.path.exists(v)) and not os.path.isabs(v):
            setattr(cfg, k, os.path.abspath(v))
    storage = build_storage or Storage(s3_endpoint=os.environ.get("AWS_ENDPOINT_URL", ""))
    _, preprocess, tokenizer = create_clip(cfg.model, cfg.pretrained, cfg.model_config, cfg.quick_gelu)
    triplets = cfg.data.rstrip("/") + "/triplets"
    train_ds = clip_dataset(triplets, "train", cfg.setting, preprocess, tokenizer, storage)
    train_rows = count_rows(triplets, "train", cfg.setting, storage)
    if train_rows < cfg.batch_size * cfg.num_workers:
        raise ValueError(f"{train_rows} training rows for setting {cfg.setting} < one global batch "
                         f"({cfg.batch_size} x {cfg.num_workers} workers)")
    val = collect(clip_dataset(triplets, "val", "580k-only", preprocess, tokenizer, storage, eval_only=True))
    marker = os.path.join(tempfile.gettempdir(), f"fusionrs-{cfg.name}-failed-once") if cfg.fail_at_step else ""
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": dataclasses.asdict(cfg), "train_rows": train_rows, "val_rows": val or None,
                           "fail_marker": marker},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                               resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=ray.train.RunConfig(name=cfg.name, storage_path=_storage_path(cfg.storage_path),
                                       failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures)),
        datasets={"train": train_ds.random_shuffle(seed=cfg.seed) if train_rows < 200_000 else train_ds},
    )
    result = trainer.fit()
    return result, export_models(result, cfg)


def export_models(result, cfg: ClipTrainConfig) -> dict:
    """Copy the best (val Mean R) and the latest open_clip exports next to the run."""
    import shutil

    exports = [(c, m) for c, m in (result.best_checkpoints or []) if "val_mean_r" in m or "epoch" in m]
    out_dir = Path(tempfile.mkdtemp()) if "://" in cfg.storage_path else Path(cfg.storage_path).resolve() / cfg.name / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    end_of_epoch = [(c, m) for c, m in exports if m.get("step") is not None and "best_val_mean_r" in m]
    picks = {"latest": end_of_epoch[-1] if end_of_epoch else None,
             "best": max(end_of_epoch, key=lambda cm: cm[1].get("val_mean_r", -1)) if end_of_epoch else None}
    for name, pick in picks.items():
        if pick is None:
            continue
        with pick[0].as_directory() as d:
            if (Path(d) / "model.pt").exists():
                shutil.copy(Path(d) / "model.pt", out_dir / f"{name}.pt")
                paths[name] = str(out_dir / f"{name}.pt")
    paths["metrics"] = [m for _, m in end_of_epoch]
    return paths


def _storage_path(p: str) -> str:
    return p if "://" in p else os.path.abspath(p)
