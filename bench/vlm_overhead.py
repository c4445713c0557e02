"""VLM LoRA training throughput: Ray Train + DeepSpeed vs a plain torch loop on the same model,
same micro-batch, same rows; tokens/s and (on a GPU) MFU.

    python bench/vlm_overhead.py                                   # CPU: the tiny debug Qwen2.5-VL
    python bench/vlm_overhead.py --model /models/Qwen2.5-VL-3B-Instruct --device cuda --bf16 \
        --max-pixels 401408 --steps 30 --micro-batch 1             # GPU: a size that fits the card

Both sides time the same micro-step: processor encoding + forward + backward + optimizer
(DeepSpeed steps the optimizer every micro-step here: accumulation 1), median after the first
steps. MFU = 6·N·tokens/s / peak, N = the model's parameters (forward 2N, backward input grads
2N, gradient-checkpointing recompute 2N per token; the LoRA weight gradients are negligible).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PEAK_TFLOPS_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0}
RESPONSE = ("A runway crosses the scene, seen in grayscale infrared style: bright structures stand out in the "
            "center and dark, low-texture regions lie at the edges, with high intensity contrast.")


def rows(n: int, size: int = 224) -> list[dict]:
    import numpy as np
    from PIL import Image

    from fusionrs.vlm.instructions import INSTRUCTIONS

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).convert("RGB").save(buf, "JPEG")
        out.append({"sample_id": f"s{i}", "source": "bench", "setting": "B-iraware", "task": "caption",
                    "instruction": INSTRUCTIONS["caption"], "response": RESPONSE, "ir_jpeg": buf.getvalue()})
    return out


def plain_loop(a, data: list[dict]) -> tuple[float, float]:
    import torch

    from fusionrs.vlm.chat import collate, decode_image, encode_example
    from fusionrs.vlm.model import add_lora, load_model, load_processor

    torch.manual_seed(0)
    processor = load_processor(a.model, a.max_pixels)
    model = load_model(a.model, dtype="bfloat16" if a.bf16 else "float32").to(a.device)
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = add_lora(model, 32, 64, 0.05)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    times, tokens = [], []
    for s in range(0, len(data), a.micro_batch):
        chunk = data[s:s + a.micro_batch]
        t = time.perf_counter()
        batch = collate([encode_example(processor, decode_image(r["ir_jpeg"]), r["instruction"], r["response"])
                         for r in chunk], processor.tokenizer.pad_token_id)
        batch = {k: v.to(a.device) for k, v in batch.items()}
        if a.bf16:
            batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if a.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        tokens.append(int(batch["attention_mask"].sum()))
    warm = slice(2, None) if len(times) > 4 else slice(None)  # the same window as the trainer's metrics
    return statistics.median(times[warm]), sum(tokens[warm]) / sum(times[warm])


def ray_train(a, data: list[dict], out: str) -> dict:
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from fusionrs.vlm.train import VlmTrainConfig, train_loop

    cfg = VlmTrainConfig(data="bench", name="vlm-overhead", storage_path=out, model=a.model, micro_batch_size=a.micro_batch,
                         grad_accum=1, bf16=a.bf16, max_pixels=a.max_pixels, num_workers=1, use_gpu=a.device == "cuda",
                         checkpoint_every=10 ** 6, lr=2e-4)
    import dataclasses

    trainer = TorchTrainer(train_loop, train_loop_config={"cfg": dataclasses.asdict(cfg), "train_rows": len(data)},
                           scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=cfg.use_gpu,
                                                                  resources_per_worker={"CPU": 1}),
                           run_config=ray.train.RunConfig(name=cfg.name, storage_path=out),
                           datasets={"train": ray.data.from_items(data)})
    return trainer.fit().metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="a HF model folder; default: write the tiny debug model")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--max-pixels", type=int, default=0)
    a = ap.parse_args()
    import ray
    import torch

    work = tempfile.mkdtemp(prefix="fusionrs-vlm-overhead-")
    if not a.model:
        from fusionrs.vlm.tiny import write_tiny_qwen2_5_vl

        a.model = write_tiny_qwen2_5_vl(Path(work) / "tiny")
    if a.device == "cpu":
        torch.set_num_threads(1)  # the Ray Train worker gets one CPU: give the plain loop the same
    data = rows(a.steps * a.micro_batch)
    plain_step, plain_tps = plain_loop(a, data)
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             **({"num_cpus": 2} if a.device == "cpu" else {}))
    m = ray_train(a, data, str(Path(work) / "train"))
    from fusionrs.vlm.model import load_model

    n_params = sum(p.numel() for p in load_model(a.model).parameters())
    gpu = torch.cuda.get_device_name(0) if a.device == "cuda" else "CPU"
    peak = next((v for k, v in PEAK_TFLOPS_BF16.items() if k in gpu), None) if a.bf16 else None

    def mfu(tps: float) -> str:
        return f"{6 * n_params * tps / (peak * 1e12) * 100:.1f}%" if peak else "n/a"

    print(f"\n{Path(a.model).name}: {n_params / 1e6:.2f}M params, micro-batch {a.micro_batch}, {a.steps} steps, "
          f"{gpu}, {'bf16' if a.bf16 else 'fp32'}, torch {torch.__version__}")
    print("| Loop | micro-step s (median) | tokens/s | MFU | ratio vs plain |\n|---|---|---|---|---|")
    print(f"| plain torch loop | {plain_step:.4f} | {plain_tps:.0f} | {mfu(plain_tps)} | 1.00× |")
    rt_tps = m["tokens_per_s_per_worker"]
    print(f"| Ray Train + DeepSpeed ZeRO-2 (1 worker) | {m['micro_step_s_median']:.4f} | {rt_tps:.0f} | {mfu(rt_tps)} | "
          f"{m['micro_step_s_median'] / plain_step:.2f}× |")


if __name__ == "__main__":
    main()
