"""Evaluate on a build's split.

Retrieval (CLIP checkpoints): six directions, Mean R, per source, zero-shot IR scene
classification → retrieval.json, retrieval.md (paper Table 4 layout).
Generative (VLM, `--task vlm`): greedy generation for IR captioning, Scene/Object/IR-cue QA on the
split's IR-aware images; ROUGE-L, lexical F1, Cap. IR, cue coverage, object F1, scene EM with 95%
bootstrap CIs → vlm_results.json, vlm_predictions.jsonl, vlm_results.md (paper Table 5 layout).

CPU:
    python -m jobs.evaluate --data out/demo/build --split test --model fusionrs-tiny-clip \
        --model-config out/demo/tiny-clip/fusionrs-tiny-clip.json --checkpoint trained=out/demo/train/clip-demo/export/best.pt \
        --checkpoint untrained=out/demo/tiny-clip/fusionrs-tiny-clip.pt --out out/eval
    python -m jobs.evaluate --task vlm --data out/demo/build --split test --model out/demo/tiny-qwen2_5_vl \
        --adapter base= --adapter B-iraware=out/demo/train/vlm-demo/export/adapter --out out/eval
Cluster (GPU actors):
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.evaluate \
        --data s3://bucket/fusionrs/600k --split test --model ViT-B-32 --checkpoint ours=s3://bucket/runs/best.pt \
        --num-gpus 1 --actors 4 --out s3://bucket/eval
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.evaluate --task vlm \
        --data s3://bucket/fusionrs/600k --model s3://bucket/models/Qwen2.5-VL-7B-Instruct \
        --adapter base= --adapter B-iraware=s3://bucket/runs/qwen7b-B/adapter --max-pixels 401408 \
        --num-gpus 1 --actors 8 --out s3://bucket/eval
"""

import argparse
import sys


def retrieval(a) -> int:
    from fusionrs.evaluation.clip_eval import evaluate_clip, write_results

    results = {}
    for item in a.checkpoint:
        name, _, path = item.partition("=")
        results[name] = evaluate_clip(a.data, a.split, a.model, path, a.model_config, a.quick_gelu,
                                      actors=a.actors, num_gpus=a.num_gpus)
        print(f"{name}: Mean R {results[name]['overall']['mean_r']:.2f} (six directions {results[name]['overall']['mean_all']:.2f})")
    write_results(results, a.out)
    print(f"wrote {a.out}/retrieval.json and retrieval.md")
    return 0


def generative(a) -> int:
    from fusionrs.evaluation.vlm_eval import evaluate_vlm, write_vlm_results

    results = {}
    for item in a.adapter or ["base="]:
        name, _, path = item.partition("=")
        results[name] = evaluate_vlm(a.data, a.split, a.model, adapter=path, actors=a.actors, num_gpus=a.num_gpus,
                                     batch_size=a.batch_size, max_pixels=a.max_pixels, n_boot=a.bootstrap)
    print(write_vlm_results(results, a.out))
    print(f"wrote {a.out}/vlm_results.json, vlm_results.md and vlm_predictions.jsonl")
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="retrieval", choices=["retrieval", "vlm"])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test", choices=["val", "test"])
    ap.add_argument("--model", required=True, help="retrieval: open_clip name; vlm: a Hugging Face model folder or s3:// URI")
    ap.add_argument("--model-config", default="")
    ap.add_argument("--quick-gelu", action="store_true")
    ap.add_argument("--checkpoint", action="append", help="retrieval: NAME=PATH (repeatable); PATH may be an open_clip tag")
    ap.add_argument("--adapter", action="append", help="vlm: NAME=ADAPTER_DIR (repeatable); NAME= for the base model")
    ap.add_argument("--max-pixels", type=int, default=0, help="vlm: the processor's image budget (0: its own)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--bootstrap", type=int, default=1000, help="vlm: bootstrap resamples for the 95%% CIs")
    ap.add_argument("--out", required=True)
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--num-gpus", type=float, default=0.0)
    a = ap.parse_args(argv)
    if a.task == "retrieval" and not a.checkpoint:
        ap.error("--checkpoint NAME=PATH is required for retrieval")
    return retrieval(a) if a.task == "retrieval" else generative(a)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
