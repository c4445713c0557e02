r"""Train a tri-modal CLIP (RGB, IR, text) on a build's triplets with Ray Train + DeepSpeed or DDP.

CPU, local Ray (after `fusionrs demo`; the tiny model from `fusionrs tiny-model clip out/tiny-clip`):
    python -m jobs.train_clip --config configs/clip-demo.yaml

Cluster:
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m jobs.train_clip --config configs/clip-580k-only.yaml data=s3://bucket/fusionrs/600k

Resubmitting the same run.name + run.storage_path resumes from the last checkpoint. The best
and latest epochs' open_clip exports land in <run.storage_path>/<run.name>/export/.
"""

import json
import sys

from fusionrs.config import ClipTrainConfig, parse_job_args
from fusionrs.train.clip.step import train_clip


def main(argv: list[str]) -> int:
    cfg = parse_job_args(argv, ClipTrainConfig, __doc__, "python -m jobs.train_clip")
    result, exports = train_clip(cfg)
    print(json.dumps({"metrics": result.metrics, "exports": {k: v for k, v in exports.items() if k != "metrics"}},
                     indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
