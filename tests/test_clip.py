"""Tri-modal CLIP: loss, distributed gradients, tiny model, Ray Train (DDP, DeepSpeed), resume."""

from __future__ import annotations

import math
import os
import tempfile
import socket

import numpy as np
import pytest
import torch

from fusionrs.clip.loss import pair_loss, trimodal_loss


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

    from fusionrs.clip.model import create_clip, export_open_clip, write_tiny_clip

    info = write_tiny_clip(tmp_path)
    net, preprocess, tok = create_clip(info["model"], info["pretrained"], info["model_config"])
    net.logit_scale = torch.nn.Parameter(net.logit_scale.detach().reshape(1) + 0.5)  # as trained under DeepSpeed
    export_open_clip(net, tmp_path / "export.pt")
    again = open_clip.create_model(info["model"], pretrained=str(tmp_path / "export.pt"))
    assert torch.allclose(again.logit_scale, net.logit_scale.reshape(()))
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(again.encode_image(x), net.encode_image(x), atol=1e-6)
    assert tok(["a river"]).shape == (1, 77)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from fusionrs.clip.model import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("tinyclip"))


def train(tiny_clip, data, tmp_path, **kw):
    from fusionrs.clip.train import ClipTrainConfig, train_clip

    cfg = ClipTrainConfig(data=str(data), storage_path=str(tmp_path / "runs"), model=tiny_clip["model"],
                          model_config=tiny_clip["model_config"], pretrained=tiny_clip["pretrained"], lr=1e-3,
                          warmup_steps=2, batch_size=16, num_workers=2, cpus_per_worker=0.5, **kw)
    return train_clip(cfg)


@pytest.mark.slow
def test_deepspeed_zero2_two_workers_and_resume_after_failure(ray_local, demo_build, tiny_clip, tmp_path):
    """DeepSpeed ZeRO-2 on two gloo workers, a worker failure at step 4, restart from the step-3
    checkpoint. (DDP on two workers runs in the demo test below, with configs/clip-demo.yaml.)"""
    marker = os.path.join(tempfile.gettempdir(), "fusionrs-ds-failed-once")
    if os.path.exists(marker):
        os.remove(marker)
    result, exports = train(tiny_clip, demo_build, tmp_path, name="ds", strategy="deepspeed", zero_stage=2, epochs=1,
                            checkpoint_every=3, fail_at_step=4, max_failures=1)
    import pyarrow.dataset as pads

    splits = pads.dataset(str(demo_build / "triplets"), format="parquet").to_table(columns=["split"])["split"].to_pylist()
    steps_per_epoch = splits.count("train") // (16 * 2)  # train rows over one global batch
    assert result.metrics["step"] == steps_per_epoch  # the step count carried on through the restart
    assert os.path.exists(marker) and "val_mean_r" in result.metrics
    import open_clip

    assert open_clip.create_model(tiny_clip["model"], pretrained=exports["best"]) is not None
    assert os.path.exists(exports["latest"])

    # The trainer plans its steps from count_rows (three small columns): the rows clip_dataset yields.
    from fusionrs.clip.data import clip_dataset, count_rows
    from fusionrs.clip.model import create_clip
    from fusionrs.storage import Storage

    _, preprocess, tokenizer = create_clip(tiny_clip["model"], tiny_clip["pretrained"], tiny_clip["model_config"])
    expected = []
    for split, setting, eval_only in (("train", "B-iraware", False), ("val", "580k-only", True),
                                      ("train", "580k-only", True)):  # no train row represents a group: 0
        args = (str(demo_build / "triplets"), split, setting)
        expected.append(clip_dataset(*args, preprocess, tokenizer, Storage(), eval_only=eval_only).count())
        assert count_rows(*args, Storage(), eval_only=eval_only) == expected[-1], (split, setting, eval_only)
    assert expected[0] > 0 and expected[1] > 0 and expected[2] == 0


@pytest.mark.slow
def test_demo_clip_beats_untrained_in_every_direction(ray_local, demo_build, tiny_clip, tmp_path):
    from fusionrs.config import load_config
    from fusionrs.clip.train import ClipTrainConfig, train_clip
    from fusionrs.evaluation.clip_eval import evaluate_clip
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs" / "clip-demo.yaml", [
        f"data={demo_build}", f"storage_path={tmp_path / 'runs'}", f"model_config={tiny_clip['model_config']}",
        f"pretrained={tiny_clip['pretrained']}"], cls=ClipTrainConfig)
    _, exports = train_clip(cfg)
    before = evaluate_clip(str(demo_build), "test", tiny_clip["model"], tiny_clip["pretrained"], tiny_clip["model_config"])
    after = evaluate_clip(str(demo_build), "test", tiny_clip["model"], exports["best"], tiny_clip["model_config"])
    for d in ("IR->Text", "Text->IR", "RGB->IR", "IR->RGB", "RGB->Text", "Text->RGB"):
        assert np.mean(list(after["overall"][d].values())) > np.mean(list(before["overall"][d].values())), d
    assert after["overall"]["mean_r"] > before["overall"]["mean_r"] + 10
