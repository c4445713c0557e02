"""Tri-modal CLIP: loss, distributed gradients, tiny model, Ray Train (DDP, DeepSpeed), resume."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from fusionrs.train.clip.loss import pair_loss, trimodal_loss


def test_pair_loss_matches_hand_computation():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    s = torch.tensor(math.log(10.0))
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    logits = (10.0 * an @ bn.T).numpy()

    def ce(m):
        return np.mean([-m[i, i] + np.log(np.exp(m[i]).sum()) for i in range(len(m))])

    assert float(pair_loss(a, b, s)) == pytest.approx(0.5 * (ce(logits) + ce(logits.T)), rel=1e-6)


def test_setting_weights():
    g = torch.Generator().manual_seed(0)
    f = {k: torch.randn(6, 8, generator=g) for k in ("rgb", "ir", "text", "text_ir")}
    s = torch.tensor(2.0)
    lt, lr, li = pair_loss(f["rgb"], f["text"], s), pair_loss(f["rgb"], f["ir"], s), pair_loss(f["ir"], f["text"], s)
    total, parts = trimodal_loss(f, s, "580k-only", w=2.0, distributed=False)
    assert float(total) == pytest.approx(float((lt + li + 2 * lr) / 4))
    assert float(trimodal_loss(f, s, "B-iraware", distributed=False)[0]) == pytest.approx(float(pair_loss(f["ir"], f["text_ir"], s)))
    assert set(trimodal_loss(f, s, "C-mixed", distributed=False)[1]) == {"ir_text", "ir_text_ir", "rgb_text", "rgb_ir"}


def _grad_worker(rank, world, port, q):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(0)
    full = {k: torch.randn(8, 4, generator=g) for k in ("rgb", "ir", "text")}
    local = {k: v[rank * 4:(rank + 1) * 4].clone().requires_grad_(True) for k, v in full.items()}
    loss, _ = trimodal_loss(local, torch.tensor(1.0), "580k-only")
    loss.backward()
    q.put((rank, float(loss), {k: v.grad.numpy() for k, v in local.items()}))
    dist.destroy_process_group()


def test_gradients_flow_through_gathered_features():
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_grad_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict((r, (l, gr)) for r, l, gr in (q.get(timeout=120) for _ in procs))
    for p in procs:
        p.join(60)
    # Reference: one process, the global batch of 8.
    g = torch.Generator().manual_seed(0)
    full = {k: torch.randn(8, 4, generator=g).requires_grad_(True) for k in ("rgb", "ir", "text")}
    ref, _ = trimodal_loss(full, torch.tensor(1.0), "580k-only", distributed=False)
    ref.backward()
    for rank, (loss, grads) in got.items():
        assert loss == pytest.approx(float(ref), rel=1e-5)  # every worker sees the global batch
        for k, grad in grads.items():
            # Both workers' losses backpropagate into this worker's features (all_gather's backward
            # sums them): 2x the single-process gradient; DDP's gradient averaging divides by 2.
            np.testing.assert_allclose(grad, 2 * full[k].grad[rank * 4:(rank + 1) * 4].numpy(), rtol=1e-4, atol=1e-6)


def test_tiny_clip_round_trips_through_open_clip(tmp_path):
    import open_clip

    from fusionrs.dev.tiny_clip import write_tiny_clip
    from fusionrs.train.clip.model import create_clip, export_open_clip

    info = write_tiny_clip(tmp_path)
    net, preprocess, tok = create_clip(info["name"], info["pretrained"], info["config_json"])
    net.logit_scale = torch.nn.Parameter(net.logit_scale.detach().reshape(1) + 0.5)  # as trained under DeepSpeed
    export_open_clip(net, tmp_path / "export.pt")
    again = open_clip.create_model(info["name"], pretrained=str(tmp_path / "export.pt"))
    assert torch.allclose(again.logit_scale, net.logit_scale.reshape(()))
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(again.encode_image(x), net.encode_image(x), atol=1e-6)
    assert tok(["a river"]).shape == (1, 77)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from fusionrs.dev.tiny_clip import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("tinyclip"))


def fresh_model(tiny_clip):
    from fusionrs.train.clip.model import create_clip

    return create_clip(tiny_clip["name"], tiny_clip["pretrained"], tiny_clip["config_json"])[0]


def train(tiny_clip, data, tmp_path, *overrides, callbacks=()):
    from fusionrs.config import ClipTrainConfig, load_config
    from fusionrs.train.clip.step import train_clip

    cfg = load_config(None, [f"data={data}", f"run.storage_path={tmp_path / 'runs'}", "optim.lr=1e-3",
                             "optim.warmup_steps=2", "batch_size=16", "run.num_workers=2", "run.cpus_per_worker=0.5",
                             *(f"model.{k}={v}" for k, v in tiny_clip.items()), *overrides], cls=ClipTrainConfig)
    return cfg, *train_clip(cfg, callbacks=callbacks)


@pytest.mark.slow
def test_deepspeed_zero2_two_workers_and_resume_after_failure(ray_local, demo_build, tiny_clip, tmp_path):
    """DeepSpeed ZeRO-2 on two gloo workers, a worker failure at step 4, restart from the step-3
    checkpoint: the restarted workers start from the checkpoint's weights, not fresh ones, and
    the step count carries on. The speed levers are on (towers compiled in place, fused AdamW):
    checkpoints, resume and the open_clip export work with them. (DDP resume runs in the demo
    test below.)"""
    from tests.faults import FailOnce, ProbeRestore, checkpoint_digest, trainable_digest

    probe = tmp_path / "probe"
    cfg, result, exports = train(tiny_clip, demo_build, tmp_path, "run.name=ds", "parallel.strategy=deepspeed",
                                 "parallel.zero_stage=2", "optim.epochs=1", "run.checkpoint_every=3",
                                 "parallel.compile=default", "optim.fused=true",
                                 "run.max_failures=1", callbacks=[FailOnce(4, tmp_path / "failed"), ProbeRestore(probe)])
    import pyarrow.dataset as pads

    splits = pads.dataset(str(demo_build / "triplets"), format="parquet").to_table(columns=["split"])["split"].to_pylist()
    steps_per_epoch = splits.count("train") // (16 * 2)  # train rows over one global batch
    assert result.metrics["opt_step"] == steps_per_epoch  # the step count carried on through the restart
    assert (tmp_path / "failed").exists() and "val_mean_r" in result.metrics
    restored = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["opt_step"] == 3 for r in restored)  # resumed from the step-3 checkpoint, not from 0
    fresh = fresh_model(tiny_clip)
    saved = checkpoint_digest(result, 3, {n for n, _ in fresh.named_parameters()})
    assert all(r["digest"] == saved for r in restored)  # ... with its weights
    fresh.logit_scale = torch.nn.Parameter(fresh.logit_scale.detach().reshape(1))  # as DeepSpeed trains it
    assert trainable_digest(fresh) != saved  # a fresh start would differ
    import open_clip

    assert open_clip.create_model(tiny_clip["name"], pretrained=exports["best"]) is not None
    assert os.path.exists(exports["latest"])

    # The trainer plans its steps from count_rows (three small columns): the rows clip_rows yields.
    from fusionrs.core.storage import Storage
    from fusionrs.train.clip.data import clip_rows, count_rows

    expected = []
    for split, setting, eval_only in (("train", "B-iraware", False), ("val", "580k-only", True),
                                      ("train", "580k-only", True)):  # no train row represents a group: 0
        expected.append(clip_rows(str(demo_build), split, setting, Storage(), eval_only=eval_only).count())
        assert count_rows(str(demo_build), split, setting, Storage(), eval_only=eval_only) == expected[-1], \
            (split, setting, eval_only)
    assert expected[0] > 0 and expected[1] > 0 and expected[2] == 0


@pytest.mark.slow
def test_ddp_restart_resumes_the_checkpoint_and_metrics_reach_every_tracker(ray_local, demo_build, tiny_clip, tmp_path):
    """configs/clip-demo.yaml (DDP, two workers), one epoch checkpointed every 3 steps, with a
    worker failure at step 4: the restart resumes from the step-3 checkpoint's weights (DDP:
    train.pt), not a fresh model's. Its metrics reach TensorBoard,
    MLflow (a file store) and W&B (offline), read back here. (That the demo's recipe trains a
    model that beats the untrained one is checked on the demo's own run: test_demo.py.)"""
    from fusionrs.config import ClipTrainConfig, load_config
    from fusionrs.train.clip.step import train_clip
    from tests.faults import FailOnce, ProbeRestore, checkpoint_digest, trainable_digest

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs" / "clip-demo.yaml", [
        f"data={demo_build}", f"run.storage_path={tmp_path / 'runs'}", "optim.epochs=1", "run.checkpoint_every=3",
        "run.log_every=1",
        *(f"model.{k}={v}" for k, v in tiny_clip.items()),
        f"tracking.mlflow_uri=file:{tmp_path / 'mlruns'}", "tracking.wandb_project=fusionrs-test",
        "tracking.wandb_mode=offline"], cls=ClipTrainConfig)
    import pyarrow.dataset as pads

    splits = pads.dataset(str(demo_build / "triplets"), format="parquet").to_table(columns=["split"])["split"].to_pylist()
    per_epoch = splits.count("train") // (cfg.batch_size * cfg.run.num_workers)
    probe = tmp_path / "probe"
    assert per_epoch >= 5
    result, _ = train_clip(cfg, callbacks=[FailOnce(4, tmp_path / "failed"), ProbeRestore(probe)])
    restored = json.loads((probe / "rank0.json").read_text())
    assert (tmp_path / "failed").exists() and restored["opt_step"] == 3  # from the step-3 checkpoint
    fresh = fresh_model(tiny_clip)
    saved = checkpoint_digest(result, 3, {n for n, _ in fresh.named_parameters()})
    assert restored["digest"] == saved  # DDP: train.pt's weights
    assert trainable_digest(fresh) != saved  # a fresh start would differ
    assert result.metrics["opt_step"] == per_epoch * cfg.optim.epochs

    # The loss curve, as TensorBoard, MLflow and W&B hold it.
    from tests.faults import tensorboard_scalars

    run_dir = tmp_path / "runs" / cfg.run.name
    curve = tensorboard_scalars(run_dir / "metrics", "train/loss")
    steps = sorted({s for s, _ in curve})
    assert steps == list(range(1, result.metrics["opt_step"] + 1))  # every step (log_every=1), the restart's too
    assert all(np.isfinite(v) for _, v in curve)  # that it goes down: the demo's own run (test_demo.py)
    assert {s for s, _ in tensorboard_scalars(run_dir / "metrics", "val/val_mean_r")}  # validation per epoch
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 refuses its file store unless asked
    client = MlflowClient(tracking_uri=f"file:{tmp_path / 'mlruns'}")
    runs = client.search_runs([client.get_experiment_by_name("fusionrs").experiment_id])
    assert len(runs) == 2 and {r.info.run_name for r in runs} == {cfg.run.name}  # the first try, the restart
    assert all(r.data.params["model.name"] == tiny_clip["name"] for r in runs)
    logged = {m.step for r in runs for m in client.get_metric_history(r.info.run_id, "train/loss")}
    assert logged == set(steps)
    offline = list((run_dir / "wandb").rglob("*.wandb"))
    assert len(offline) == 2 and all(f.stat().st_size > 0 for f in offline), offline
