"""CLIP training overhead on CPU: Ray Train (DeepSpeed ZeRO-2 or DDP) step time vs a plain torch
loop, same tiny model, same batch, same loss, one worker.

    python bench/clip_overhead.py                         # tiny debug CLIP, batch 32, 30 steps
    python bench/clip_overhead.py --batch 64 --steps 50 --strategies deepspeed ddp

Both sides time the same thing: forward + loss + backward + optimizer step (`step_s`), median
over the steps after the first. Ray Train also reports the whole iteration (`iter_s`: waiting
for the next Ray Data batch included). Ratio = Ray Train step / plain-loop step.
"""

from __future__ import annotations

import argparse
import os
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
            "text": rng.integers(1, 49000, (n, 77)).astype(np.int64)}


def plain_loop(tiny: dict, batch: int, steps: int) -> float:
    from fusionrs.train.clip.loss import trimodal_loss
    from fusionrs.train.clip.model import create_clip
    from fusionrs.train.clip.train import encode

    torch.manual_seed(0)
    model, _, _ = create_clip(tiny["model"], tiny["pretrained"], tiny["model_config"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    data = synthetic_batch({"id": np.arange(batch)}, size)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss, _ = trimodal_loss(encode(model, data, torch.device("cpu")), model.logit_scale, "580k-only")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def ray_train(tiny: dict, batch: int, steps: int, strategy: str, out: str) -> dict:
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from fusionrs.train.clip.train import ClipTrainConfig, train_loop

    size = 64  # the tiny model's image size
    ds = ray.data.range(batch * steps).map_batches(synthetic_batch, fn_kwargs={"image_size": size}, batch_size=batch)
    cfg = ClipTrainConfig(data="synthetic", name=f"overhead-{strategy}", storage_path=out, model=tiny["model"],
                          model_config=tiny["model_config"], pretrained=tiny["pretrained"], lr=1e-4, warmup_steps=1,
                          epochs=1, batch_size=batch, num_workers=1, strategy=strategy, checkpoint_every=10 ** 6)
    import dataclasses

    trainer = TorchTrainer(train_loop, train_loop_config={"cfg": dataclasses.asdict(cfg), "train_rows": batch * steps},
                           scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                           run_config=ray.train.RunConfig(name=cfg.name, storage_path=out), datasets={"train": ds})
    return trainer.fit().metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--strategies", nargs="+", default=["deepspeed", "ddp"])
    args = ap.parse_args()
    import ray

    from fusionrs.train.clip.model import write_tiny_clip

    work = tempfile.mkdtemp(prefix="fusionrs-clip-overhead-")
    tiny = write_tiny_clip(Path(work) / "tiny")
    torch.set_num_threads(1)  # the Ray Train worker gets one CPU: give the plain loop the same
    plain = plain_loop(tiny, args.batch, args.steps)
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = [("plain torch loop", plain, float("nan"))]
    for s in args.strategies:
        m = ray_train(tiny, args.batch, args.steps, s, str(Path(work) / "train"))
        rows.append((f"Ray Train + {'DeepSpeed ZeRO-2' if s == 'deepspeed' else 'DDP'} (1 worker)",
                     m["step_s_median"], m["iter_s_median"]))
    print(f"\ntiny CLIP ({tiny['model']}), batch {args.batch}, {args.steps} steps, 1 CPU thread, torch {torch.__version__}")
    print("| Loop | step s (median) | iteration s (median) | step ratio vs plain |\n|---|---|---|---|")
    for name, step, it in rows:
        print(f"| {name} | {step:.4f} | {it:.4f} | {step / plain:.2f}× |")


if __name__ == "__main__":
    main()
