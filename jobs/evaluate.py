r"""Evaluate CLIP checkpoints and VLM adapters on every configured benchmark, as one Ray job.

The build's split: six-direction retrieval, Mean R, per source, zero-shot IR scene
classification and dual-modal fusion (CLIP); Table 5 generative metrics with bootstrap CIs and
the output audit (VLM). Real thermal sensors: HIT-UAV object presence and linear probe (CLIP),
HIT-UAV VQA (VLM), Caltech Aerial RGB-T exact-pair retrieval (CLIP). Writes results/<benchmark>.json,
clip_table.md, vlm_table.md and the per-benchmark files (docs/evaluation.md). A benchmark whose
data is missing is skipped with a line saying why.

CPU (after `fusionrs demo`):
    python -m jobs.evaluate --config configs/eval-suite.yaml
    python -m jobs.evaluate --config configs/eval-demo.yaml
    python -m jobs.evaluate data=out/demo/build clip.model.name=fusionrs-tiny-clip \
        clip.model.config_json=out/demo/tiny-clip/fusionrs-tiny-clip.json \
        clip.checkpoints.trained=out/demo/train/clip-demo/export/best.pt out=out/eval
Cluster (GPU actors):
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.evaluate \
        --config configs/eval-600k.yaml
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.evaluate \
        data=s3://bucket/fusionrs/600k clip.model.name=ViT-B-32 clip.checkpoints.ours=s3://bucket/runs/best.pt \
        vlm.model=s3://bucket/models/Qwen2.5-VL-7B-Instruct vlm.adapters.base= \
        vlm.adapters.B-iraware=s3://bucket/runs/qwen7b-B/export/adapter vlm.max_pixels=401408 \
        compute.num_gpus=1 compute.actors=8 out=s3://bucket/eval
"""

import sys

from fusionrs.config import EvalConfig, parse_job_args
from fusionrs.eval.suite import run_suite, summary


def main(argv: list[str]) -> int:
    cfg = parse_job_args(argv, EvalConfig, __doc__, "python -m jobs.evaluate")
    result = run_suite(cfg)
    for name in ("clip_table.md", "vlm_table.md"):
        print(open(f"{cfg.out}/{name}").read() if "://" not in cfg.out else f"{cfg.out}/{name}")
    print(summary(result))
    print(f"results: {cfg.out}/results/*.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
