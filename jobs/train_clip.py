"""Train a tri-modal CLIP (RGB, IR, text) on a build's Parquet with Ray Train + DeepSpeed.

CPU, local Ray (after `fusionrs demo`; the tiny model from `fusionrs tiny-model clip out/tiny-clip`):
    python -m jobs.train_clip --config configs/clip-demo.yaml

Cluster:
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m jobs.train_clip --config configs/clip-580k-only.yaml data=s3://bucket/fusionrs/600k
Resubmitting the same `name` + `storage_path` resumes from the last checkpoint.
"""

import json
import sys

from fusionrs.clip.train import ClipTrainConfig, train_clip
from fusionrs.config import config_from_argv


def main(argv: list[str]) -> int:
    cfg = config_from_argv(argv, ClipTrainConfig, __doc__)
    if cfg is None:
        return 2
    result, exports = train_clip(cfg)
    print(json.dumps({"metrics": result.metrics, "exports": {k: v for k, v in exports.items() if k != "metrics"}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
