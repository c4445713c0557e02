"""Evaluate CLIP checkpoints on a build's split: six-direction retrieval, Mean R, per source,
zero-shot IR scene classification; writes retrieval.json and retrieval.md.

CPU:
    python -m jobs.evaluate --data out/demo/build --split test --model fusionrs-tiny-clip \
        --model-config out/tiny-clip/fusionrs-tiny-clip.json --checkpoint trained=out/train/clip-demo/export/best.pt \
        --checkpoint untrained=out/tiny-clip/fusionrs-tiny-clip.pt --out out/eval
Cluster (GPU embedding actors):
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.evaluate \
        --data s3://bucket/fusionrs/600k --split test --model ViT-B-32 --checkpoint ours=s3://bucket/runs/best.pt \
        --num-gpus 1 --actors 4 --out s3://bucket/eval
"""

import argparse
import sys

from fusionrs.evaluation.clip_eval import evaluate_clip, write_results


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test", choices=["val", "test"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--model-config", default="")
    ap.add_argument("--quick-gelu", action="store_true")
    ap.add_argument("--checkpoint", action="append", required=True, help="NAME=PATH (repeatable); PATH may be an open_clip tag")
    ap.add_argument("--out", required=True)
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--num-gpus", type=float, default=0.0)
    a = ap.parse_args(argv)
    results = {}
    for item in a.checkpoint:
        name, _, path = item.partition("=")
        results[name] = evaluate_clip(a.data, a.split, a.model, path, a.model_config, a.quick_gelu,
                                      actors=a.actors, num_gpus=a.num_gpus)
        print(f"{name}: Mean R {results[name]['overall']['mean_r']:.2f} (six directions {results[name]['overall']['mean_all']:.2f})")
    write_results(results, a.out)
    print(f"wrote {a.out}/retrieval.json and retrieval.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
