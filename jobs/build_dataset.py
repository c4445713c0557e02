r"""Build a FusionRS-style RGB–IR–text dataset (the Ray Data pipeline of docs/pipeline.md).

CPU, local Ray (after `fusionrs demo`, which writes the sample sources to out/demo/sample):
    python -m jobs.build_dataset --config configs/demo.yaml output=out/demo-2 split.seed=3

Cluster (the driver runs on the head node; see docs/cluster.md):
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m jobs.build_dataset --config configs/fusionrs-600k.yaml

Rerunning the same command resumes: finished shards are reused, nothing is paid twice.
"""

import sys

from fusionrs.build.pipeline import run_build_command
from fusionrs.config import BuildConfig, parse_job_args


def main(argv: list[str]) -> int:
    cfg = parse_job_args(argv, BuildConfig, __doc__, "python -m jobs.build_dataset")
    return run_build_command(cfg)  # build, then the summary (or the error, exit 2; SIGTERM: 143)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
