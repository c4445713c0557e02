"""VLM LoRA training throughput: Ray Train + DeepSpeed vs a plain torch loop on the same model,
same micro-batch, same rows; tokens/s and (on a GPU) MFU.

    python bench/vlm_overhead.py                                   # CPU: the tiny debug Qwen2.5-VL
    python bench/vlm_overhead.py --model /models/Qwen2.5-VL-3B-Instruct --device cuda --bf16 \
        --max-pixels 401408 --steps 30 --micro-batch 1             # GPU: a size that fits the card
    python bench/vlm_overhead.py --arch qwen2.5-vl-7b --device cuda --bf16 --no-ray \
        --image-size 512 --max-pixels 401408 --micro-batch 1 8     # GPU, no checkpoint at hand: the
                                                                   # real architecture, random weights

Both sides time the same micro-step: processor encoding + forward + backward + optimizer
(DeepSpeed steps the optimizer every micro-step here: accumulation 1), median after the first
two steps. The Ray side is the trainer (`fusionrs.train.trainer.fit`) with the VLM step
(train/vlm/step.py: the same model, LoRA and chat encoding) on one Ray Train worker; its
tokens/s is the trainer's own `tokens_per_s` metric, logged every step here (its window
includes the wait for the next Ray Data batch); the plain loop's is tokens over step time.
MFU = model FLOPs of one micro-step (forward + backward, attention included, counted with
torch's FlopCounterMode on the same batch; the gradient-checkpointing recompute is not
counted, as MFU is usually defined) × steps/s / the card's dense bf16 peak. Beside it, the
6·N·tokens estimate (forward 2N, recompute 2N, input gradients 2N per token, N = all parameters:
the hardware FLOPs of frozen-base LoRA with checkpointing).

`--arch` builds the real Qwen2.5-VL-3B/7B architecture (the released configs' sizes) with
random weights straight on the device, with the tiny model's tokenizer and processor (special
token ids mapped into the real vocabulary size): the work per token does not depend on the
weights, so no checkpoint download is needed to measure speed. `--no-ray` times the plain loop
only (where Ray or DeepSpeed is not installed, e.g. a bare GPU box).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PEAK_TFLOPS_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0}
LORA = {"r": 32, "alpha": 64, "dropout": 0.05}  # the paper's (and the trainer's default lora section)
# Sizes from the released Qwen2.5-VL-3B/7B-Instruct config.json files (vision tower shared).
VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14, spatial_merge_size=2,
              temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu")
ARCHS = {
    "qwen2.5-vl-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                          num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-vl-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                          num_key_value_heads=4, tie_word_embeddings=False),
}
RESPONSE = ("A runway crosses the scene, seen in grayscale infrared style: bright structures stand out in the "
            "center and dark, low-texture regions lie at the edges, with high intensity contrast.")


def random_arch(arch: str, tiny_dir: str, device: str, bf16: bool, attn: str = "sdpa"):
    """The real architecture with random weights, built on the device; ids from the tiny tokenizer."""
    import torch
    from transformers import AutoConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tiny = AutoConfig.from_pretrained(tiny_dir)
    ids = {k: getattr(tiny, k) for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                         "vision_end_token_id")}
    t = tiny.text_config
    text = dict(ARCHS[arch], vocab_size=152064, max_position_embeddings=32768, bos_token_id=t.bos_token_id,
                eos_token_id=t.eos_token_id, pad_token_id=t.pad_token_id, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})
    config = Qwen2_5_VLConfig(text_config=text, vision_config=dict(VISION, out_hidden_size=text["hidden_size"]),
                              tie_word_embeddings=text["tie_word_embeddings"], **ids)
    config._attn_implementation = attn
    with torch.device(device):
        return Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16 if bf16 else torch.float32)


def rows(n: int, size: int = 224) -> list[dict]:
    import numpy as np
    from PIL import Image

    from fusionrs.train.vlm.instructions import INSTRUCTIONS

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).convert("RGB").save(buf, "JPEG")
        out.append({"sample_id": f"s{i}", "source": "bench", "setting": "B-iraware", "task": "caption",
                    "instruction": INSTRUCTIONS["caption"], "response": RESPONSE, "ir_jpeg": buf.getvalue()})
    return out


def plain_loop(a, data: list[dict]) -> tuple[float, float, float, int]:
    """(median micro-step s, tokens/s, FLOPs per micro-step, parameters) of the plain loop."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fusionrs.train.vlm.chat import collate, decode_image, encode_example
    from fusionrs.train.vlm.model import add_lora, load_model, load_processor

    torch.manual_seed(0)
    processor = load_processor(a.model, a.max_pixels)
    if a.arch:
        model = random_arch(a.arch, a.model, a.device, a.bf16, a.attn)
    else:
        model = load_model(a.model, dtype="bfloat16" if a.bf16 else "float32", attn_implementation=a.attn).to(a.device)
    n_params = sum(p.numel() for p in model.parameters())
    for c in (model.config, getattr(model.config, "text_config", None)):  # as the trainer's VLM step
        if c is not None:
            c.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = add_lora(model, LORA["r"], LORA["alpha"], LORA["dropout"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    times, tokens, enc_s = [], [], []

    def encoded(chunk):
        batch = collate([encode_example(processor, decode_image(r["ir_jpeg"]), r["instruction"], r["response"])
                         for r in chunk], processor.tokenizer.pad_token_id)
        batch = {k: v.to(a.device) for k, v in batch.items()}
        if a.bf16:
            batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
        return batch

    def count_flops(m) -> int:  # model FLOPs of one micro-step: forward + backward, no recompute
        m.gradient_checkpointing_disable()  # the counter and checkpoint recompute do not mix
        with FlopCounterMode(display=False) as fc:
            m(**encoded(data[:a.micro_batch_size]), use_cache=False).loss.backward()
        m.zero_grad(set_to_none=True)
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return fc.get_total_flops()

    try:
        flops = count_flops(model)
    except AssertionError:  # torch's counter rejects grouped-query SDPA shapes: count the same math eagerly
        model.set_attn_implementation("eager")
        flops = count_flops(model)
        model.set_attn_implementation(a.attn)
    for s in range(0, len(data), a.micro_batch_size):
        chunk = data[s:s + a.micro_batch_size]
        t = time.perf_counter()
        batch = encoded(chunk)
        if a.device == "cuda":
            torch.cuda.synchronize()
        enc_s.append(time.perf_counter() - t)  # processor + host-to-device copy: CPU work inside the step
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if a.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        tokens.append(int(batch["attention_mask"].sum()))
    warm = slice(2, None) if len(times) > 4 else slice(None)  # the same window as the trainer's metrics
    mem = torch.cuda.max_memory_allocated() / 2 ** 30 if a.device == "cuda" else float("nan")
    print(f"plain loop: micro-batch {a.micro_batch_size}, {statistics.median(tokens):.0f} tokens/micro-step (median), "
          f"processor encoding {statistics.median(enc_s[warm]):.3f} s of {statistics.median(times[warm]):.3f} s "
          f"(median), peak memory {mem:.1f} GiB", flush=True)
    del model, opt
    if a.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return statistics.median(times[warm]), sum(tokens[warm]) / sum(times[warm]), flops, n_params


def ray_train(a, data: list[dict], out: str) -> tuple[float, float]:
    """(median micro-step s, median tokens/s) of the trainer with the VLM step on one worker."""
    import ray

    from fusionrs.config import VlmTrainConfig, load_config
    from fusionrs.core.ray_session import start_ray
    from fusionrs.train.metrics import read_metrics
    from fusionrs.train.trainer import fit
    from fusionrs.train.vlm.step import VlmStep

    start_ray(num_cpus=2 if a.device == "cpu" else 0, log_file=str(Path(out) / "ray.log"))
    cfg = load_config(None, [
        "data=bench", "run.name=vlm-overhead", f"run.storage_path={out}", f"model.path={a.model}",
        f"model.max_pixels={a.max_pixels}", f"model.attn_implementation={a.attn}", "model.gradient_checkpointing=true",
        *(f"lora.{k}={v}" for k, v in LORA.items()), f"micro_batch_size={a.micro_batch_size}",
        "optim.grad_accum=1", "optim.lr=2e-4", "optim.epochs=1", f"parallel.bf16={str(a.bf16).lower()}",
        "parallel.strategy=deepspeed", "parallel.zero_stage=2", "run.num_workers=1", "run.cpus_per_worker=1",
        f"run.use_gpu={str(a.device == 'cuda').lower()}", "run.checkpoint_every=1000000", "run.log_every=1",
        "loader.materialize_below=0", "loader.shuffle_buffer=0",  # rows stream in order: no shuffle buffer to fill
    ], cls=VlmTrainConfig)
    result = fit(cfg, VlmStep, ray.data.from_items(data), len(data))
    tps = [r["train/tokens_per_s"] for r in read_metrics(cfg) if "train/tokens_per_s" in r]
    return result.metrics["step_s_median"], statistics.median(tps[2:] if len(tps) > 4 else tps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="a HF model folder; default: write the tiny debug model")
    ap.add_argument("--arch", default="", choices=["", *ARCHS], help="real architecture, random weights (see above)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--micro-batch", type=int, nargs="+", default=[2], dest="micro_batch")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--max-pixels", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=224, help="side of the square IR images fed to the processor")
    ap.add_argument("--no-ray", action="store_true", help="time the plain loop only")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"],
                    help="attention implementation (plain loop; the trainer's is attn_implementation)")
    a = ap.parse_args()
    import torch

    work = tempfile.mkdtemp(prefix="fusionrs-vlm-overhead-")
    if not a.model:
        from fusionrs.dev.tiny_vlm import write_tiny_qwen2_5_vl

        a.model = write_tiny_qwen2_5_vl(Path(work) / "tiny")
    if a.arch and not a.no_ray:
        raise SystemExit("--arch builds the model in this process only: use it with --no-ray")
    if a.device == "cpu":
        torch.set_num_threads(1)  # the Ray Train worker gets one CPU: give the plain loop the same
    gpu = torch.cuda.get_device_name(0) if a.device == "cuda" else "CPU"
    peak = next((v for k, v in PEAK_TFLOPS_BF16.items() if k in gpu), None) if a.bf16 else None
    table = []
    for mb in a.micro_batch:
        a.micro_batch_size = mb
        data = rows(a.steps * mb, a.image_size)
        step_s, tps, flops, n_params = plain_loop(a, data)

        def mfu(step: float, tokens_s: float) -> str:
            if not peak:
                return "n/a | n/a"
            return f"{flops / step / (peak * 1e12):.1%} | {6 * n_params * tokens_s / (peak * 1e12):.1%}"

        table.append(f"| plain torch loop | {mb} | {step_s:.4f} | {tps:.0f} | {flops / 1e12:.2f} | {mfu(step_s, tps)} | 1.00× |")
        if not a.no_ray:
            rt_step, rt_tps = ray_train(a, data, str(Path(work) / f"train-mb{mb}"))
            table.append(f"| Ray Train + DeepSpeed ZeRO-2 (1 worker) | {mb} | {rt_step:.4f} | {rt_tps:.0f} | "
                         f"{flops / 1e12:.2f} | {mfu(rt_step, rt_tps)} | {rt_step / step_s:.2f}× |")
    name = a.arch or Path(a.model).name
    print(f"\n{name}: {n_params / 1e6:.2f}M params, {a.image_size}px images, max_pixels {a.max_pixels or 'model default'}, "
          f"{a.steps} steps, {gpu}, {'bf16' if a.bf16 else 'fp32'}, torch {torch.__version__}")
    print("| Loop | micro-batch | micro-step s (median) | tokens/s | TFLOP/micro-step | MFU (counted) | HFU (6N) "
          "| ratio vs plain |\n|---|---|---|---|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    main()
