"""CLIP training overhead on CPU: the trainer on Ray Train (DeepSpeed ZeRO-2 or DDP) step time vs a
plain torch loop, same tiny model, same batch, same loss, one worker.

    python bench/clip_overhead.py                         # tiny debug CLIP, batch 32, 30 steps
    python bench/clip_overhead.py --batch 64 --steps 50 --strategies deepspeed ddp

Both sides time the same thing: forward + loss + backward + optimizer step (`step_s`), median
over the steps after the first two (the trainer's `step_s_median`). The plain loop runs the
trainer's own CLIP step (train/clip/step.py: model, loss, logit-scale clamp) with torch AdamW and
gradient clipping; the Ray side is `fusionrs.train.trainer.fit` with that step on synthetic
preprocessed rows from Ray Data. Ray Train also reports the whole iteration (`iter_s`: waiting
for the next Ray Data batch included), timed between consecutive steps by a trainer callback.
Ratio = Ray Train step / plain-loop step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def synthetic_batch(batch: dict, image_size: int) -> dict:
    """Preprocessed rows as the CLIP dataset yields them: pixels and tokens, from the row id."""
    ids = batch["id"]
    rng = np.random.default_rng(int(ids[0]))
    n = len(ids)
    return {"rgb": rng.standard_normal((n, 3, image_size, image_size), dtype=np.float32),
            "ir": rng.standard_normal((n, 3, image_size, image_size), dtype=np.float32),
            "text": rng.integers(1, 49000, (n, 77)).astype(np.int64),
            "sample_id": np.asarray([f"s{i}" for i in ids])}


class StepClock:
    """Trainer callback (rank 0, before every micro-step): appends the time to a file, so the
    intervals between steps are whole iterations, the wait for the next batch included."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __call__(self, info) -> None:
        if info.rank == 0:
            with open(self.path, "a") as f:
                f.write(f"{time.perf_counter()}\n")


def warm_median(xs: list[float]) -> float:
    """The trainer's window: the steps after the first two (when there are more than four)."""
    return statistics.median(xs[2:] if len(xs) > 4 else xs)


def train_config(tiny: dict, batch: int, strategy: str, out: str):
    from fusionrs.config import ClipTrainConfig, load_config

    return load_config(None, [
        "data=synthetic", f"run.name=overhead-{strategy}", f"run.storage_path={out}",
        *(f"model.{k}={v}" for k, v in tiny.items()), "setting=580k-only", f"batch_size={batch}",
        "optim.lr=1e-4", "optim.weight_decay=0.1", "optim.warmup_steps=1", "optim.epochs=1", "optim.grad_clip=1.0",
        "run.num_workers=1", "run.cpus_per_worker=1", f"parallel.strategy={strategy}",
        "run.checkpoint_every=1000000", "run.log_every=10",
        "loader.materialize_below=0", "loader.shuffle_buffer=0",  # rows stream in order: no shuffle buffer to fill
    ], cls=ClipTrainConfig)


def plain_loop(tiny: dict, batch: int, steps: int, work: str) -> float:
    from fusionrs.train.clip.step import ClipStep
    from fusionrs.train.trainer import param_groups

    cfg = train_config(tiny, batch, "ddp", work)  # the same model, loss and optimizer settings
    step = ClipStep(cfg, {})
    torch.manual_seed(cfg.run.seed)
    model = step.build_model(torch.device("cpu"))
    opt = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr)
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    data = synthetic_batch({"id": np.arange(batch)}, size)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss, _, _ = step.loss(model, data, torch.device("cpu"))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step.after_optimizer_step(model)
        times.append(time.perf_counter() - t)
    return warm_median(times)


def ray_train(tiny: dict, batch: int, steps: int, strategy: str, out: str) -> tuple[float, float]:
    """(median step s, median iteration s) of the trainer on one Ray Train worker."""
    import ray

    from fusionrs.train.clip.step import ClipStep
    from fusionrs.train.trainer import fit

    cfg = train_config(tiny, batch, strategy, out)
    size = 64  # the tiny model's image size
    ds = ray.data.range(batch * steps).map_batches(synthetic_batch, fn_kwargs={"image_size": size}, batch_size=batch)
    clock = Path(out) / f"clock-{strategy}.txt"
    result = fit(cfg, ClipStep, ds, batch * steps, callbacks=[StepClock(clock)])
    starts = [float(x) for x in clock.read_text().split()]
    return result.metrics["step_s_median"], warm_median([b - a for a, b in zip(starts, starts[1:])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--strategies", nargs="+", default=["deepspeed", "ddp"], choices=["deepspeed", "ddp"])
    args = ap.parse_args()
    from fusionrs.core.ray_session import start_ray
    from fusionrs.dev.tiny_clip import write_tiny_clip

    work = tempfile.mkdtemp(prefix="fusionrs-clip-overhead-")
    tiny = write_tiny_clip(Path(work) / "tiny")
    torch.set_num_threads(1)  # the Ray Train worker gets one CPU: give the plain loop the same
    plain = plain_loop(tiny, args.batch, args.steps, work)
    start_ray(num_cpus=2, log_file=str(Path(work) / "ray.log"))  # a new local instance (or RAY_ADDRESS)
    rows = [("plain torch loop", plain, float("nan"))]
    for s in args.strategies:
        step, it = ray_train(tiny, args.batch, args.steps, s, str(Path(work) / "train"))
        rows.append((f"Ray Train + {'DeepSpeed ZeRO-2' if s == 'deepspeed' else 'DDP'} (1 worker)", step, it))
    print(f"\ntiny CLIP ({tiny['name']}), batch {args.batch}, {args.steps} steps, 1 CPU thread, torch {torch.__version__}")
    print("| Loop | step s (median) | iteration s (median) | step ratio vs plain |\n|---|---|---|---|")
    for name, step, it in rows:
        print(f"| {name} | {step:.4f} | {it:.4f} | {step / plain:.2f}× |")


if __name__ == "__main__":
    main()
