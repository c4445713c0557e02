"""DiffV2IR translation speed: images/s and estimated MFU by batch size, precision and speed
lever, plus a "reference-equivalent" mode (batch 1, fp16, upstream's per-image loop).

    python bench/translate_gpu.py                      # GPU: full-size architecture, random weights, 512 px, 20 steps
    python bench/translate_gpu.py --tiny               # CPU smoke test (CI): the tiny debug model, 64 px, 2 steps
    python bench/translate_gpu.py --batches 1 8 32 --dtypes bf16 --compile on off --out docs/translate_gpu.md
    python bench/translate_gpu.py --batches 16 --dtypes bf16 --json out.json \
        --levers off channels_last compile=default compile=reduce-overhead,channels_last compile=max-autotune,channels_last,fp8
    python bench/translate_gpu.py --write-ldm DIR      # a full-size random DiffV2IR checkpoint in the LDM format
                                                       # (DIR/diffv2ir-random.ckpt + .yaml), for `fusionrs convert-diffv2ir`

Random weights are fine for speed: the work per step does not depend on the values.
MFU = achieved UNet+VAE FLOP/s (counted with torch's FlopCounterMode on this exact graph)
divided by the card's dense peak for that precision (table below; unknown cards print n/a);
with fp8 the FLOPs are still compared with the bf16 peak.

`--levers`: each argument is one set of pipeline.Levers, comma-separated (`off`, `channels_last`,
`compile=MODE`, `attention=math`, `fp8`); `--compile on off` is short for `--levers compile=default off`.
Every set starts from the same random weights (seeded), so each row also reports how far its
images are from the plain model's (`max Δ vs plain`, uint8 levels, same seeds, same batch) and the
first call's seconds (compilation, CUDA-graph recording, autotuning).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

PEAK_TFLOPS = {  # dense, no sparsity
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
    "L4": {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3},
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(tiny: bool, device: str, seed: int = 0):
    """UNet, VAE and text encoder of the DiffV2IR architecture with random weights (seeded: every
    lever set starts from the same weights), built on `device`, and a CLIP tokenizer."""
    import tempfile

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from fusionrs.build.translate.diffv2ir.configs import DIFFV2IR_GENERATE, tiny_generate_config
    from fusionrs.build.translate.diffv2ir.tokenizer import write_clip_tokenizer

    cfg = tiny_generate_config() if tiny else DIFFV2IR_GENERATE
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**create_unet_diffusers_config_from_ldm(cfg, {}))
        vae = AutoencoderKL(**create_vae_diffusers_config_from_ldm(cfg, {}))
        text = CLIPTextModel(CLIPTextConfig(**cfg["model"]["params"]["fusionrs_text_encoder"]))
    tok = write_clip_tokenizer(tempfile.mkdtemp())
    return unet, vae, text, tok


def write_ldm(out_dir: str, tiny: bool, device: str) -> Path:
    """The architecture with random weights as an upstream LDM checkpoint (tensors only, fp16,
    EMA and training UNet sharing storage so the file holds them once) + its LDM config: what
    `fusionrs convert-diffv2ir` reads, so a build can run the real converter's output."""
    import yaml

    from fusionrs.build.translate.diffv2ir.configs import DIFFV2IR_GENERATE, tiny_generate_config
    from fusionrs.build.translate.diffv2ir.ldm_keys import ema_key, unet_to_ldm, vae_to_ldm

    unet, vae, text, _ = build(tiny, device)
    half = {"unet": {k: v.half().cpu() for k, v in unet.state_dict().items()},
            "vae": {k: v.half().cpu() for k, v in vae.state_dict().items()}}
    sd: dict[str, torch.Tensor] = {}
    for k, v in unet_to_ldm(half["unet"]).items():
        sd[f"model.diffusion_model.{k}"] = sd[ema_key(f"model.diffusion_model.{k}")] = v
    sd.update({f"first_stage_model.{k}": v for k, v in vae_to_ldm(half["vae"]).items()})
    sd.update({f"cond_stage_model.transformer.{k}": v.half().cpu() for k, v in text.state_dict().items()})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "diffv2ir-random.ckpt"
    torch.save({"state_dict": sd, "global_step": 0}, path)
    cfg = tiny_generate_config() if tiny else DIFFV2IR_GENERATE
    path.with_suffix(".yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def parse_levers(spec: str):
    """`compile=reduce-overhead,channels_last,fp8` → Levers; `off` → the plain model."""
    from fusionrs.build.translate.diffv2ir.pipeline import Levers

    kw: dict = {}
    for part in filter(None, spec.split(",")):
        key, _, value = part.partition("=")
        if key == "off":
            continue
        kw[key] = value if value else True
    return Levers(**kw)


def lever_name(levers) -> str:
    from fusionrs.build.translate.diffv2ir.pipeline import Levers

    off = Levers()
    on = [k if isinstance(v, bool) else f"{k}={v}" for k, v in vars(levers).items()
          if k != "compile" and v != getattr(off, k)]
    return ",".join(on) or "-"


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


def inputs(batch: int, res: int):
    from PIL import Image

    from fusionrs.dev.sample import draw_scene

    imgs = [draw_scene("port", np.random.default_rng(i)).resize((res, res)) for i in range(batch)]
    segs = [Image.new("RGB", (res, res), (255, 255, 255))] * batch
    prompts = ["turn the visible image of many boats in a harbor into infrared"] * batch
    return imgs, prompts, list(range(batch)), segs


def time_it(pipe, n_images, batch, res, sc, reference=False) -> tuple[float, float, list]:
    """(images/s, seconds of the first call, the first call's images as uint8 arrays)."""
    imgs, prompts, seeds, segs = inputs(batch, res)
    sync = torch.cuda.synchronize if pipe.device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    first = pipe(imgs, prompts, seeds, segs, sc)  # warm-up (and compile, CUDA-graph recording)
    sync()
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    done = 0
    while done < n_images:
        if reference:  # upstream: one image at a time, text re-encoded per image
            pipe._null = None
        pipe(imgs, prompts, seeds, segs, sc)
        done += batch
    sync()
    return done / (time.perf_counter() - t0), first_s, [None if x is None else np.asarray(x, np.int16) for x in first]


def max_delta(a: list, b: list | None) -> str:
    """Largest difference in uint8 levels between two runs' images (same seeds, same batch)."""
    if b is None:
        return "n/a (no plain row)"
    if any(x is None for x in a + b):
        return "non-finite"
    return str(max(int(np.abs(x - y).max()) for x, y in zip(a, b)))


def main() -> None:
    from fusionrs.build.translate.diffv2ir.pipeline import DiffV2IRPipeline, Levers, SamplingConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test with the tiny debug model")
    ap.add_argument("--batches", type=int, nargs="*", default=None)
    ap.add_argument("--dtypes", nargs="*", default=None, choices=list(DTYPES))
    ap.add_argument("--compile", nargs="*", default=None, choices=["on", "off"],
                    help="short for --levers compile=default / off")
    ap.add_argument("--levers", nargs="*", default=None,
                    help="lever sets, e.g. off channels_last compile=reduce-overhead,fp8")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend (CPU smoke: aot_eager)")
    ap.add_argument("--images", type=int, default=None, help="images timed per configuration")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default 20; --tiny 2)")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference-equivalent row")
    ap.add_argument("--out", default="", help="also write the table as Markdown here")
    ap.add_argument("--json", default="", help="also write the rows as JSON here")
    ap.add_argument("--write-ldm", default="", metavar="DIR",
                    help="write a random LDM checkpoint of the architecture and exit")
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    if a.write_ldm:
        print(write_ldm(a.write_ldm, a.tiny, device))
        return
    res, steps = (64, 2) if a.tiny else (512, 20)
    steps = a.steps or steps
    batches = a.batches or ([1, 2] if a.tiny else [1, 2, 4, 8, 16, 32])
    dtypes = a.dtypes or (["fp32"] if device == "cpu" else ["fp32", "bf16"])
    specs = a.levers or [{"on": "compile=default", "off": "off"}[c] for c in (a.compile or ["off"])]
    n_images = a.images or (4 if a.tiny else 64)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    sc = SamplingConfig(steps=steps)
    header = (f"device: {name}; {res}px, {steps} steps, random weights ({'tiny' if a.tiny else 'full-size'} architecture), "
              f"torch {torch.__version__}")
    rows = [header, "", "| mode | dtype | compile | batch | images/s | GFLOP/image | MFU | other levers | first call s "
            "| max Δ vs plain (levels) |", "|---|---|---|---|---|---|---|---|---|---|"]
    records = []
    print("\n".join(rows), flush=True)

    def emit(mode, dt, levers, batch, ips, flops, first_s=float("nan"), delta="", error=""):
        mfu = f"{flops * ips / (peak[dt] * 1e12):.1%}" if peak and device == "cuda" and ips else "n/a"
        ips_s = f"{ips:.3f}" if ips else (error or "failed")
        line = (f"| {mode} | {dt} | {levers.compile} | {batch} | {ips_s} | {flops / 1e9:.0f} | {mfu} | "
                f"{lever_name(levers)} | {first_s:.1f} | {delta} |")
        rows.append(line)
        records.append({"mode": mode, "dtype": dt, "levers": vars(levers), "batch": batch, "images_per_s": ips,
                        "gflop_per_image": flops / 1e9, "mfu": mfu, "first_call_s": first_s, "max_delta_vs_plain": delta,
                        "error": error, "device": name, "resolution": res, "steps": steps})
        print(line, flush=True)

    from PIL import Image

    for dt in dtypes:
        probe = [Image.new("RGB", (res, res))]
        flops = count_flops(DiffV2IRPipeline(*build(a.tiny, device), device=device, dtype=DTYPES[dt]),
                            probe, ["x"], [0], probe, sc)
        plain_images: dict[int, list] = {}
        for spec in specs:
            levers = parse_levers(spec)
            for b in batches:
                # Fresh, identical modules per row: levers change them in place (memory format,
                # FP8 weights, compiled wrappers); dynamo's caches are cleared so compiling is timed.
                torch._dynamo.reset()
                pipe = DiffV2IRPipeline(*build(a.tiny, device), device=device, dtype=DTYPES[dt])
                try:
                    pipe.apply_levers(levers, batch_size=b, compile_backend=a.compile_backend)
                    ips, first_s, images = time_it(pipe, max(n_images, b), b, res, sc)
                    if levers == Levers():
                        plain_images[b] = images
                    emit("batched", dt, levers, b, ips, flops, first_s, max_delta(images, plain_images.get(b)))
                except torch.OutOfMemoryError:
                    emit("batched", dt, levers, b, 0.0, flops, error="OOM")
                except Exception as e:  # noqa: BLE001 - a lever that cannot run here (e.g. fp8 without torchao) is a row
                    emit("batched", dt, levers, b, 0.0, flops, error=f"{type(e).__name__}: {str(e)[:300]}")
                del pipe
                if device == "cuda":
                    torch.cuda.empty_cache()
    if not a.no_reference:
        # Reference-equivalent: batch 1, fp16 on GPU (fp32 on CPU), no levers, as upstream runs.
        ref_dt = "fp16" if device == "cuda" else "fp32"
        pipe = DiffV2IRPipeline(*build(a.tiny, device), device=device, dtype=DTYPES[ref_dt])
        probe = [Image.new("RGB", (res, res))]
        ips, first_s, _ = time_it(pipe, max(2, n_images // 4), 1, res, sc, reference=True)
        emit("reference-equivalent", ref_dt, Levers(), 1, ips, count_flops(pipe, probe, ["x"], [0], probe, sc), first_s)
    if a.out:
        Path(a.out).write_text("\n".join(rows) + "\n")
    if a.json:
        Path(a.json).write_text(json.dumps({"header": header, "rows": records}, indent=1))


if __name__ == "__main__":
    main()
