r"""Evaluate CLIP checkpoints and VLM adapters on a build's val or test split.

Retrieval (CLIP): six directions, Mean R, per source, zero-shot IR scene classification →
retrieval.json, retrieval.md (paper Table 4 layout). Generative (VLM): greedy generation for IR
captioning and Scene / Object / IR-cue QA on the split's IR-aware images; ROUGE-L, lexical F1,
Cap. IR, cue coverage, object F1, scene EM with 95% bootstrap CIs → vlm_results.json,
vlm_predictions.jsonl, vlm_results.md (paper Table 5 layout).

CPU (after `fusionrs demo`):
    python -m jobs.evaluate --config configs/eval-demo.yaml
    python -m jobs.evaluate data=out/demo/build clip.model.name=fusionrs-tiny-clip \
        clip.model.config_json=out/demo/tiny-clip/fusionrs-tiny-clip.json \
        clip.checkpoints.trained=out/demo/train/clip-demo/export/best.pt out=out/eval
Cluster (GPU actors):
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.evaluate \
        data=s3://bucket/fusionrs/600k clip.model.name=ViT-B-32 clip.checkpoints.ours=s3://bucket/runs/best.pt \
        vlm.model=s3://bucket/models/Qwen2.5-VL-7B-Instruct vlm.adapters.base= \
        vlm.adapters.B-iraware=s3://bucket/runs/qwen7b-B/export/adapter vlm.max_pixels=401408 \
        compute.num_gpus=1 compute.actors=8 out=s3://bucket/eval
"""

import sys

from fusionrs.config import EvalConfig, parse_job_args
from fusionrs.eval.clip_eval import evaluate_clip, write_results
from fusionrs.eval.vlm_eval import evaluate_vlm, write_vlm_results


def main(argv: list[str]) -> int:
    cfg = parse_job_args(argv, EvalConfig, __doc__, "python -m jobs.evaluate")
    c = cfg.compute
    if cfg.clip.checkpoints:
        m, results = cfg.clip.model, {}
        for name, ckpt in cfg.clip.checkpoints.items():
            results[name] = evaluate_clip(cfg.data, cfg.split, m.name, ckpt, m.config_json, m.quick_gelu,
                                          actors=c.actors, num_gpus=c.num_gpus, batch_size=c.batch_size)
            r = results[name]["overall"]
            print(f"{name}: Mean R {r['mean_r']:.2f} (six directions {r['mean_all']:.2f})")
        write_results(results, cfg.out)
        print(f"wrote {cfg.out}/retrieval.json and retrieval.md")
    if cfg.vlm.model:
        v, results = cfg.vlm, {}
        for name, adapter in (v.adapters or {"base": ""}).items():
            results[name] = evaluate_vlm(cfg.data, cfg.split, v.model, adapter=adapter, tasks=v.tasks, actors=c.actors,
                                         num_gpus=c.num_gpus, batch_size=c.batch_size, max_pixels=v.max_pixels,
                                         min_pixels=v.min_pixels, n_boot=v.bootstrap)
        print(write_vlm_results(results, cfg.out))
        print(f"wrote {cfg.out}/vlm_results.json, vlm_results.md and vlm_predictions.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
