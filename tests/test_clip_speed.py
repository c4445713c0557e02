"""The CLIP speed levers, checked for correctness on CPU (their speed is a GPU measurement):
RGB and IR (and both captions) encoded as one batch, the towers compiled in place with
torch.compile, torch's fused AdamW. (The Ray Train run with them on, through a restart, is
test_clip.py's DeepSpeed test.)"""

from __future__ import annotations

import pytest
import torch

from fusionrs.train.clip.loss import trimodal_loss
from fusionrs.train.clip.step import ClipStep, encode


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from fusionrs.dev.tiny_clip import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("tinyclip"))


def fresh(tiny_clip):
    from fusionrs.train.clip.model import create_clip

    torch.manual_seed(0)
    return create_clip(tiny_clip["name"], tiny_clip["pretrained"], tiny_clip["config_json"])[0]


def batch(n: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(n, 3, 64, 64, generator=g), "ir": torch.randn(n, 3, 64, 64, generator=g),
            "text": torch.randint(1, 49000, (n, 77), generator=g), "text_ir": torch.randint(1, 49000, (n, 77), generator=g)}


def separately(model, b: dict) -> dict:
    return {**{k: model.encode_image(b[k]) for k in ("rgb", "ir")}, **{k: model.encode_text(b[k]) for k in ("text", "text_ir")}}


def test_one_image_batch_for_rgb_and_ir_gives_each_its_own_embeddings(tiny_clip):
    model = fresh(tiny_clip).eval()
    b = batch()
    with torch.no_grad():
        joint, alone = encode(model, b, "cpu"), separately(model, b)
        assert set(joint) == set(alone)
        for k in alone:
            torch.testing.assert_close(joint[k], alone[k], atol=1e-5, rtol=1e-5, msg=k)
        only_ir = encode(model, {"ir": b["ir"], "text_ir": b["text_ir"]}, "cpu")
    torch.testing.assert_close(only_ir["ir"], alone["ir"], atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # inductor compiles on CPU for about a minute
def test_compiled_towers_give_the_same_loss_gradients_and_state_dict_keys(tiny_clip):
    eager, compiled = fresh(tiny_clip), fresh(tiny_clip)
    keys = list(compiled.state_dict())
    for tower in ClipStep.compile_targets(None, compiled):
        tower.compile(mode="default")
    assert list(compiled.state_dict()) == keys  # checkpoints and exports keep their names
    b = batch()
    losses = []
    for model in (eager, compiled):
        loss, _ = trimodal_loss(encode(model, b, "cpu"), model.logit_scale, "C-mixed", 1.0)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], atol=1e-4, rtol=1e-4)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, atol=1e-4, rtol=1e-3, msg=name)


def test_fused_adamw_takes_the_same_step():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(8, 4)), torch.nn.Parameter(torch.randn(4))]
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p, q in zip(params, copies):
        p.grad = q.grad = torch.randn_like(p)
    plain = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    fused = torch.optim.AdamW(copies, lr=1e-2, weight_decay=0.1, fused=True)
    for _ in range(3):
        plain.step()
        fused.step()
    for p, q in zip(params, copies):
        torch.testing.assert_close(q, p, atol=1e-6, rtol=1e-5)
