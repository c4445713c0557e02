"""Tri-modal CLIP training speed on one GPU: samples/s and MFU of the trainer's step.

    python bench/clip_gpu.py                                  # ViT-B/32, batch 256, bf16, 30 steps
    python bench/clip_gpu.py --models ViT-B-32 ViT-L-14 --batch 256 --steps 30
    python bench/clip_gpu.py --tiny                           # CPU smoke test: the tiny debug CLIP

One step is exactly the trainer's (`fusionrs.clip.train`): encode RGB, IR and text with the
shared image tower, the `580k-only` tri-modal loss, backward, gradient clipping, AdamW. A
"sample" is one triplet (two images and one caption). Random weights and inputs: the work per
step does not depend on the values. Two precisions, as the two strategies run them:
`amp-bf16` (fp32 weights, bf16 autocast: DDP with `bf16=true`) and `bf16-weights` (bf16 weights
under autocast: what DeepSpeed's bf16 engine computes forward and backward; its fp32 master
copy only changes the optimizer step). MFU = FLOPs of forward + backward (counted with torch's
FlopCounterMode on this exact step) per second / the card's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

PEAK_TFLOPS_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0}  # dense, no sparsity


def step_fn(model, opt, batch: dict, dtype):
    from fusionrs.train.clip.loss import trimodal_loss
    from fusionrs.train.clip.step import encode

    def step(count_only: bool = False):
        with torch.autocast(batch["rgb"].device.type, dtype=torch.bfloat16, enabled=dtype is not None):
            loss, _ = trimodal_loss(encode(model, batch, batch["rgb"].device), model.logit_scale, "580k-only",
                                    distributed=False)
        loss.backward()
        if count_only:
            opt.zero_grad(set_to_none=True)
            return
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def measure(name: str, model_config: str, precision: str, batch: int, steps: int, device: str) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from fusionrs.train.clip.model import create_clip

    torch.manual_seed(0)
    model, _, _ = create_clip(name, "", model_config)
    model = model.to(device)
    if precision == "bf16-weights":
        model = model.to(torch.bfloat16)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    pdtype = torch.bfloat16 if precision == "bf16-weights" else torch.float32
    data = {"rgb": torch.randn(batch, 3, size, size, device=device, dtype=pdtype),
            "ir": torch.randn(batch, 3, size, size, device=device, dtype=pdtype),
            "text": torch.randint(1, 49000, (batch, 77), device=device)}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1)
    step = step_fn(model, opt, data, None if precision == "fp32" else torch.bfloat16)
    with FlopCounterMode(display=False) as fc:
        step(count_only=True)
    flops = fc.get_total_flops()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    s = statistics.median(times[3:] if len(times) > 6 else times)
    mem = torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else float("nan")
    return {"model": name, "precision": precision, "batch": batch, "step_s": s, "samples_per_s": batch / s,
            "tflop_per_step": flops / 1e12, "achieved_tflops": flops / s / 1e12, "peak_mem_gib": mem}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["ViT-B-32"])
    ap.add_argument("--precisions", nargs="+", default=["amp-bf16", "bf16-weights"],
                    choices=["fp32", "amp-bf16", "bf16-weights"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test with the tiny debug model")
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    models = [(m, "") for m in a.models]
    if a.tiny:
        from fusionrs.dev.tiny_clip import write_tiny_clip

        t = write_tiny_clip(Path(tempfile.mkdtemp()) / "tiny")
        models, a.batch, a.steps, a.precisions = [(t["name"], t["config_json"])], 8, 3, ["fp32", "amp-bf16"]
    gpu = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    peak = next((v for k, v in PEAK_TFLOPS_BF16.items() if k in gpu), None)
    print(f"{gpu}, torch {torch.__version__}; tri-modal step (580k-only), random weights, {a.steps} steps, median")
    print("| model | precision | batch/GPU | step s | samples/s/GPU | TFLOP/step | TFLOP/s | MFU (bf16 dense) | peak mem GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, cfg in models:
        for p in a.precisions:
            try:
                r = measure(name, cfg, p, a.batch, a.steps, device)
            except torch.OutOfMemoryError:
                print(f"| {name} | {p} | {a.batch} | OOM | | | | | |")
                torch.cuda.empty_cache()
                continue
            mfu = f"{r['achieved_tflops'] / peak:.1%}" if peak and device == "cuda" else "n/a"
            print(f"| {name} | {p} | {a.batch} | {r['step_s']:.4f} | {r['samples_per_s']:.0f} | {r['tflop_per_step']:.2f} "
                  f"| {r['achieved_tflops']:.1f} | {mfu} | {r['peak_mem_gib']:.1f} |", flush=True)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
