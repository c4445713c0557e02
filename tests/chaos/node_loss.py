"""Remove a worker node (allow_graceful=False) in the middle of a build; the build must finish
with exactly the expected sample ids, each once.  Usage: node_loss.py SAMPLE_DIR OUT"""

import sys
import threading
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from tests.chaos.common import expected_ids, output_ids, report, wait_for

sample_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
worker = cluster.add_node(num_cpus=2)
ray.init(address=cluster.address, log_to_driver=False)

from fusionrs.build.pipeline import build  # noqa: E402
from tests.conftest import sample_config  # noqa: E402

cfg = sample_config(sample_dir, f"output={out}", "translate.num_cpus=0.5")
result = {}
t = threading.Thread(target=lambda: result.update(m=build(cfg)), daemon=True)
t.start()
ir_dir = out / "_stage" / "ir"
started = wait_for(lambda: ir_dir.exists() and any(ir_dir.rglob("*.parquet")), 180)
cluster.remove_node(worker, allow_graceful=False)  # from the main thread, as Cluster requires
t.join(300)
ids = output_ids(out)
report(started=started, finished="m" in result, n=len(ids), unique=len(set(ids)),
       exact=set(ids) == expected_ids(sample_dir))
ray.shutdown()
cluster.shutdown()
