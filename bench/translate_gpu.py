"""DiffV2IR translation speed: images/s and estimated MFU by batch size, precision and compile,
plus a "reference-equivalent" mode (batch 1, fp16, upstream's per-image loop).

    python bench/translate_gpu.py                      # GPU: full-size architecture, random weights, 512 px, 20 steps
    python bench/translate_gpu.py --tiny               # CPU smoke test (CI): the tiny debug model, 64 px, 2 steps
    python bench/translate_gpu.py --batches 1 8 32 --dtypes bf16 --compile on off --out docs/translate_gpu.md

Random weights are fine for speed: the work per step does not depend on the values.
MFU = achieved UNet+VAE FLOP/s (counted with torch's FlopCounterMode on this exact graph)
divided by the card's dense peak for that precision (table below; unknown cards print n/a).
"""

from __future__ import annotations

import argparse
import time

import torch

PEAK_TFLOPS = {  # dense, no sparsity
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
    "L4": {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3},
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(tiny: bool, device: str):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from fusionrs.build.translate.diffv2ir.configs import DIFFV2IR_GENERATE, tiny_generate_config
    from fusionrs.build.translate.diffv2ir.tokenizer import write_clip_tokenizer

    cfg = tiny_generate_config() if tiny else DIFFV2IR_GENERATE
    with torch.device(device):
        unet = UNet2DConditionModel(**create_unet_diffusers_config_from_ldm(cfg, {}))
        vae = AutoencoderKL(**create_vae_diffusers_config_from_ldm(cfg, {}))
        text = CLIPTextModel(CLIPTextConfig(**cfg["model"]["params"]["fusionrs_text_encoder"]))
    import tempfile

    tok = write_clip_tokenizer(tempfile.mkdtemp())
    return unet, vae, text, tok


def count_flops(pipe, imgs, prompts, seeds, segs, sc) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from fusionrs.build.translate.diffv2ir.pipeline import SamplingConfig

    one = SamplingConfig(steps=1, cfg_text=sc.cfg_text, cfg_image=sc.cfg_image, cfg_seg=sc.cfg_seg)
    with FlopCounterMode(display=False) as fc:
        pipe(imgs, prompts, seeds, segs, one)
    per_step_total = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc0:  # encoders + decode once: subtract to get the UNet step
        pipe.encode_image(imgs), pipe.encode_image(segs), pipe.encode_text(prompts), pipe.decode(torch.zeros(len(imgs), 4, imgs[0].height // 8, imgs[0].width // 8, device=pipe.device))
    fixed = fc0.get_total_flops()
    unet_step = per_step_total - fixed
    return (fixed + unet_step * sc.steps) / len(imgs)  # FLOPs per image


def time_it(pipe, n_images, batch, res, sc, reference=False) -> float:
    import numpy as np
    from PIL import Image

    from fusionrs.dev.sample import draw_scene

    imgs = [draw_scene("port", np.random.default_rng(i)).resize((res, res)) for i in range(batch)]
    segs = [Image.new("RGB", (res, res), (255, 255, 255))] * batch
    prompts = ["turn the visible image of many boats in a harbor into infrared"] * batch
    pipe(imgs, prompts, list(range(batch)), segs, sc)  # warm-up (and compile)
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    done = 0
    while done < n_images:
        if reference:  # upstream: one image at a time, text re-encoded per image
            pipe._null = None
        pipe(imgs, prompts, list(range(batch)), segs, sc)
        done += batch
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - t0)


def main() -> None:
    from fusionrs.build.translate.diffv2ir.pipeline import DiffV2IRPipeline, SamplingConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test with the tiny debug model")
    ap.add_argument("--batches", type=int, nargs="*", default=None)
    ap.add_argument("--dtypes", nargs="*", default=None, choices=list(DTYPES))
    ap.add_argument("--compile", nargs="*", default=["off"], choices=["on", "off"])
    ap.add_argument("--images", type=int, default=None, help="images timed per configuration")
    ap.add_argument("--out", default="", help="also write the table as Markdown here")
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    res, steps = (64, 2) if a.tiny else (512, 20)
    batches = a.batches or ([1, 2] if a.tiny else [1, 2, 4, 8, 16, 32])
    dtypes = a.dtypes or (["fp32"] if device == "cpu" else ["fp32", "bf16"])
    n_images = a.images or (4 if a.tiny else 64)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    sc = SamplingConfig(steps=steps)
    unet, vae, text, tok = build(a.tiny, device)
    rows = [f"device: {name}; {res}px, {steps} steps, random weights ({'tiny' if a.tiny else 'full-size'} architecture)",
            "", "| mode | dtype | compile | batch | images/s | GFLOP/image | MFU |", "|---|---|---|---|---|---|---|"]
    print("\n".join(rows))

    def emit(mode, dt, comp, batch, ips, flops):
        mfu = f"{flops * ips / (peak[dt] * 1e12):.1%}" if peak and device == "cuda" else "n/a"
        line = f"| {mode} | {dt} | {comp} | {batch} | {ips:.3f} | {flops / 1e9:.0f} | {mfu} |"
        rows.append(line)
        print(line, flush=True)

    from PIL import Image

    for dt in dtypes:
        pipe = DiffV2IRPipeline(unet, vae, text, tok, device=device, dtype=DTYPES[dt])
        probe = [Image.new("RGB", (res, res))]
        flops = count_flops(pipe, probe, ["x"], [0], probe, sc)
        for comp in a.compile:
            if comp == "on":
                pipe.unet = torch.compile(pipe.unet)
            for b in batches:
                try:
                    emit("batched", dt, comp, b, time_it(pipe, max(n_images, b), b, res, sc), flops)
                except torch.OutOfMemoryError:
                    rows.append(f"| batched | {dt} | {comp} | {b} | OOM | | |")
                    print(rows[-1])
                    torch.cuda.empty_cache()
            pipe.unet = unet
    # Reference-equivalent: batch 1, fp16 on GPU (fp32 on CPU), no compile, as upstream runs.
    ref_dt = "fp16" if device == "cuda" else "fp32"
    pipe = DiffV2IRPipeline(unet, vae, text, tok, device=device, dtype=DTYPES[ref_dt])
    emit("reference-equivalent", ref_dt, "off", 1, time_it(pipe, max(2, n_images // 4), 1, res, sc, reference=True),
         count_flops(pipe, [Image.new("RGB", (res, res))], ["x"], [0], [Image.new("RGB", (res, res))], sc))
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
