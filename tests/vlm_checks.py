"""Checks shared by the VLM family tests: a few LoRA steps on one batch lower its loss, and
batched greedy generation from left-padded prompts adds tokens."""

from __future__ import annotations

import torch

from fusionrs.train.vlm.chat import generation_inputs
from fusionrs.train.vlm.instructions import INSTRUCTIONS


def lora_steps_lower_the_loss(lora, batch: dict, steps: int = 4, lr: float = 1e-2) -> list[float]:
    opt = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = lora(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0], losses
    return losses


def generates_a_batch(model, processor, images: list) -> None:
    """Two prompts of different lengths (caption, scene) over `images`, greedy, 4 new tokens."""
    inputs = generation_inputs(processor, images, [INSTRUCTIONS["caption"], INSTRUCTIONS["scene"]])
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 2 and out.shape[1] > inputs["input_ids"].shape[1]
