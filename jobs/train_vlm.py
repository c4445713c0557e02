r"""LoRA instruction tuning of a VLM (Qwen2.5-VL first) on a build's IR-aware rows, on Ray Train
with DeepSpeed ZeRO-2/3.

CPU, local Ray (after `fusionrs demo`; the tiny model from `fusionrs tiny-model qwen2_5_vl out/tiny-qwen2_5_vl`):
    python -m jobs.train_vlm --config configs/vlm-demo.yaml

Cluster:
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m jobs.train_vlm --config configs/vlm-qwen2.5-vl-7b.yaml data=s3://bucket/fusionrs/600k setting=B-iraware

Resubmitting the same run.name + run.storage_path resumes from the last checkpoint. The adapter
(peft + processor) is exported to <run.storage_path>/<run.name>/export/adapter.
"""

import json
import sys

from fusionrs.config import VlmTrainConfig, parse_job_args
from fusionrs.train.vlm.step import train_vlm


def main(argv: list[str]) -> int:
    cfg = parse_job_args(argv, VlmTrainConfig, __doc__, "python -m jobs.train_vlm")
    result, adapter = train_vlm(cfg)
    print(json.dumps({"metrics": result.metrics, "adapter": adapter}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
