"""Build a FusionRS-style RGB–IR–text dataset.

CPU, local Ray (after `fusionrs sample out/demo/sample` or `fusionrs demo`):
    python -m jobs.build_dataset --config configs/demo.yaml output=out/demo-2 split.seed=3

Cluster (the driver runs on the head node; see docs/cluster.md):
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m jobs.build_dataset --config configs/fusionrs-600k.yaml
"""

import sys

from fusionrs.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
