#!/usr/bin/env bash
# The GPU benchmarks in one go, each bounded in time, tables written to OUT_DIR (default bench-out/).
#   bash bench/gpu_all.sh [OUT_DIR]
# Order = priority: CLIP (ViT-B/32, ViT-L/14), VLM LoRA (Qwen2.5-VL-7B architecture), DiffV2IR.
set -u
out=${1:-bench-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
$py -c "import torch, transformers, diffusers, open_clip, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'diffusers', diffusers.__version__, 'open_clip', open_clip.__version__, 'peft', peft.__version__)" | tee -a "$out/gpu.txt"
timeout 120 $py bench/clip_gpu.py --models ViT-B-32 ViT-L-14 --batch 256 --steps 25 2>&1 | grep -v "No pretrained weights" | tee "$out/clip_gpu.md"
timeout 180 $py bench/vlm_overhead.py --arch qwen2.5-vl-7b --device cuda --bf16 --no-ray --image-size 512 \
    --max-pixels 401408 --micro-batch 1 8 --steps 16 2>&1 | grep -v -i "warn" | tee "$out/vlm_gpu.md"
timeout 180 $py bench/translate_gpu.py --batches 1 8 32 --dtypes bf16 --images 32 2>&1 | grep -v "kept in float32" | tee "$out/translate_gpu.md"
