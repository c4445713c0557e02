"""The translate pool's demand adds GPU nodes: an AutoscalingCluster with a fake GPU node type
(min 0) and a head without GPUs; the pool (num_gpus=1, up to 2 actors) can only run there.
AutoscalingCluster runs `ray stop --force` (every Ray on the machine): the test that runs this
is marked `isolated` and runs after the main suite.  Usage: autoscale.py BUILD_YAML OUT"""

import sys
from pathlib import Path

import ray
from ray.cluster_utils import AutoscalingCluster

from tests.chaos.common import report


class FakeAutoscalingCluster(AutoscalingCluster):
    """The pip wheel lacks ray's fake_multi_node/example.yaml; give the base config here."""

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        cfg = {"cluster_name": "fake_multinode", "max_workers": 8, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1,
               "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                            "disable_launch_config_check": True},
               "head_node_type": "ray.head.default", "auth": {}, "docker": {}, "file_mounts": {},
               "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
               **{k: [] for k in ("initialization_commands", "setup_commands", "head_setup_commands",
                                  "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")}}
        cfg["available_node_types"] = {**worker_node_types, "ray.head.default": {
            "resources": head_resources, "node_config": {}, "max_workers": 0}}
        cfg.update(config_kwargs)
        return cfg


sample_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
cluster = FakeAutoscalingCluster(
    head_resources={"CPU": 2},
    worker_node_types={"gpu_node": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2}},
    idle_timeout_minutes=10)
cluster.start()
ray.init("auto", log_to_driver=False)
gpus_before = sum(n["Resources"].get("GPU", 0) for n in ray.nodes() if n["Alive"])

from fusionrs.build.pipeline import build  # noqa: E402
from tests.conftest import sample_config  # noqa: E402

cfg = sample_config(sample_dir, f"output={out}", "translate.num_gpus=1", "translate.num_cpus=0.5",
                    "translate.min_actors=1", "translate.max_actors=2")
m = build(cfg)
gpu_nodes = [n for n in ray.nodes() if n["Resources"].get("GPU", 0) > 0]
report(gpus_before=gpus_before, gpu_nodes_added=len(gpu_nodes), triplets=m["counts"]["triplets"], status=m["status"])
ray.shutdown()
cluster.shutdown()
