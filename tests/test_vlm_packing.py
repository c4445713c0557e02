"""Padding-free packing (fusionrs.train.vlm.packing) on the tiny Qwen2.5-VL, CPU, fp32: a pack of
examples with images of different shapes gives each example the logits it has alone, the same
loss (mean over all supervised tokens) and the same gradients as the examples run one by one.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/test_vlm_packing.py
"""

import numpy as np
import pytest
import torch
from PIL import Image

from fusionrs.train.vlm.chat import IGNORE, collate, encode_example
from fusionrs.train.vlm.instructions import INSTRUCTIONS
from fusionrs.train.vlm.model import add_lora, load_model, load_processor
from fusionrs.train.vlm.packing import (
    UnsupportedFamily,
    block_causal_mask,
    forward_packed,
    pack,
    pack_by_tokens,
    packed_figures,
    padded_figures,
    plan_packs,
    rope_index_for,
    supervised_tokens,
)

# (image width, height), task, response: aspect ratios give different image grids (and so
# different 3-D rope layouts), responses different lengths.
EXAMPLES = [
    ((72, 64), "caption", "An airport, seen in grayscale infrared style: bright structures stand out in the "
                          "center and dark, low-texture regions lie across the scene."),
    ((56, 56), "scene", "airport"),
    ((112, 28), "object", "airplane, runway, building, road"),
    ((28, 112), "ir_cue", "bright structures stand out in the center; high intensity contrast"),
    ((84, 42), "scene", "storage tank"),
]


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from fusionrs.dev.tiny_vlm import write_tiny_qwen2_5_vl

    return write_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tinyvlm") / "tiny-qwen2_5_vl")


@pytest.fixture(scope="module")
def processor(tiny_vlm):
    return load_processor(tiny_vlm)


@pytest.fixture(scope="module")
def base_model(tiny_vlm):
    return load_model(tiny_vlm).eval()


@pytest.fixture(scope="module")
def examples(processor):
    rng = np.random.default_rng(0)
    out = []
    for (w, h), task, response in EXAMPLES:
        # Textured images: every patch differs, so a patch embedding in the wrong place shows.
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        out.append(encode_example(processor, img, INSTRUCTIONS[task], response))
    return out


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The reduction, written out: token t's logits predict label t+1; IGNORE labels drop out;
    summed over tokens (the mean is sum / count over every example of the micro-step)."""
    logits, labels = logits[..., :-1, :].reshape(-1, logits.shape[-1]).float(), labels[..., 1:].reshape(-1)
    keep = labels != IGNORE
    return torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum"), int(keep.sum())


def alone(model, example, pad_id):
    """The reference: the example in a batch of one, positions and masks as the model makes them."""
    return model(**collate([example], pad_id), use_cache=False)


def spans(examples):
    starts = np.cumsum([0] + [len(e["input_ids"]) for e in examples])
    return list(zip(starts[:-1], starts[1:]))


def test_packed_row_has_no_padding_and_keeps_images_aligned(examples, processor, base_model):
    row = pack(examples, rope_index_for(base_model))
    n = sum(len(e["input_ids"]) for e in examples)
    assert row["input_ids"].shape == row["labels"].shape == (1, n) and row["position_ids"].shape == (4, 1, n)
    assert "attention_mask" not in row
    assert not bool((row["input_ids"] == processor.tokenizer.pad_token_id).any())
    assert torch.equal(row["pixel_values"], torch.cat([e["pixel_values"] for e in examples]))
    assert torch.equal(row["image_grid_thw"], torch.cat([e["image_grid_thw"] for e in examples]))
    assert len({tuple(e["image_grid_thw"][0].tolist()) for e in examples}) >= 4  # really different grids
    for e, (a, b) in zip(examples, spans(examples)):
        assert torch.equal(row["input_ids"][0, a:b], e["input_ids"])
        assert torch.equal(row["position_ids"][0, 0, a:b], torch.arange(b - a))  # text positions restart
        # Every label survives except each example's first (a prompt token, never supervised).
        assert row["labels"][0, a] == IGNORE and torch.equal(row["labels"][0, a + 1:b], e["labels"][1:])
    assert supervised_tokens(row["labels"]) == sum(supervised_tokens(e["labels"]) for e in examples)


def test_an_example_never_predicts_the_next_examples_first_token(examples, base_model):
    """Alone, an example's first label is never used (labels shift by one); in a pack the previous
    example's last token would predict it. encode_example never supervises a first token, so make
    one that does: the pack must still count exactly the tokens the examples count alone."""
    second = dict(examples[1], labels=examples[1]["labels"].clone())
    second["labels"][0] = second["input_ids"][0]
    row = pack([examples[0], second], rope_index_for(base_model))
    boundary = len(examples[0]["input_ids"])
    assert row["labels"][0, boundary] == IGNORE
    assert supervised_tokens(row["labels"]) == supervised_tokens(examples[0]["labels"]) + supervised_tokens(second["labels"])


def qwen_rope_reference(ids: torch.Tensor, grid_thw: torch.Tensor, image_id: int, merge: int) -> torch.Tensor:
    """Qwen2-VL's M-RoPE, written from its description: text tokens step all three axes together;
    an image's tokens sit at (start, start + row, start + col) on its merged grid; the text after
    it resumes at start + max(rows, cols)."""
    out, pos, i, images = [], 0, 0, iter(grid_thw.tolist())
    while i < len(ids):
        if ids[i] != image_id:
            out.append((pos, pos, pos))
            pos, i = pos + 1, i + 1
            continue
        t, h, w = next(images)
        rows, cols = h // merge, w // merge
        out += [(pos, pos + r, pos + c) for _ in range(t) for r in range(rows) for c in range(cols)]
        i += t * rows * cols
        pos += max(rows, cols)
    return torch.tensor(out).T


def test_image_tokens_get_their_spatial_positions(examples, processor, base_model):
    row = pack(examples, rope_index_for(base_model))
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for e, (a, b) in zip(examples, spans(examples)):
        want = qwen_rope_reference(e["input_ids"], e["image_grid_thw"], image_id, merge=2)
        assert torch.equal(row["position_ids"][1:, 0, a:b], want)


@pytest.mark.parametrize("attn, explicit_mask", [("sdpa", False), ("sdpa", True), ("eager", False), ("eager", True)])
def test_each_example_has_the_logits_it_has_alone(examples, processor, tiny_vlm, base_model, attn, explicit_mask):
    model = base_model if attn == "sdpa" else load_model(tiny_vlm, attn_implementation=attn).eval()
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        row = pack(examples, rope_index_for(model), explicit_mask=explicit_mask)
        packed = forward_packed(model, row).logits[0]
        for e, (a, b) in zip(examples, spans(examples)):
            torch.testing.assert_close(packed[a:b], alone(model, e, pad).logits[0], atol=1e-5, rtol=0)


def test_with_the_cache_on_attention_crosses_examples(examples, processor, base_model):
    """Why forward_packed turns the cache off: with it on (the text config's default in eval),
    transformers does not read the position restarts and the second example sees the first."""
    row = pack(examples[:2], rope_index_for(base_model))
    (a, b) = spans(examples[:2])[1]
    with torch.no_grad():
        cached = base_model(**row).logits[0, a:b]
        want = alone(base_model, examples[1], processor.tokenizer.pad_token_id).logits[0]
    assert (cached - want).abs().max() > 1e-2


def trainable(tiny_vlm, lora: bool):
    torch.manual_seed(0)
    model = load_model(tiny_vlm)
    if lora:  # as VlmStep.build_model: checkpointing, LoRA on the language model
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        model = add_lora(model, r=8, alpha=16, dropout=0.0)
        with torch.no_grad():  # LoRA B starts at zero, which zeroes every lora_A gradient: perturb it
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.05)
    return model.train()


@pytest.mark.parametrize("lora", [True, False], ids=["lora-grads", "all-grads"])
def test_packed_loss_and_gradients_equal_the_examples_one_by_one(tiny_vlm, processor, examples, lora):
    model = trainable(tiny_vlm, lora)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    pad = processor.tokenizer.pad_token_id

    row = pack(examples, rope_index_for(model))
    out = forward_packed(model, row)
    packed_sum, packed_count = token_loss_sum(out.logits, row["labels"])
    torch.testing.assert_close(out.loss, packed_sum / packed_count, atol=1e-6, rtol=0)  # the model's own mean
    out.loss.backward()
    packed_grads = {n: p.grad.clone() for n, p in params.items()}
    model.zero_grad()

    sums, counts = zip(*(token_loss_sum(alone(model, e, pad).logits, e["labels"]) for e in examples))
    assert packed_count == sum(counts)
    unpacked = torch.stack(sums).sum() / sum(counts)
    unpacked.backward()
    torch.testing.assert_close(out.loss.detach(), unpacked.detach(), atol=1e-5, rtol=0)
    for n, p in params.items():
        torch.testing.assert_close(packed_grads[n], p.grad, atol=1e-5, rtol=0, msg=n)
        # Relative to the parameter's largest gradient too: the random vision tower's gradients
        # are ~1e-5, where atol alone would compare nothing. (Measured: ≤ 1.1e-6 relative.)
        scale = float(p.grad.abs().max())
        assert scale > 0 and float((packed_grads[n] - p.grad).abs().max()) <= 1e-4 * scale, n


def test_plan_packs_is_greedy_in_order_within_budget():
    assert plan_packs([5, 3, 4, 2, 6, 1], 8) == [[0, 1], [2, 3], [4, 5]]
    assert plan_packs([8, 1, 7], 8) == [[0], [1, 2]]
    assert plan_packs([3, 3, 3], 100) == [[0, 1, 2]]
    with pytest.raises(ValueError, match="more than max_tokens"):
        plan_packs([3, 9], 8)


def test_pack_by_tokens_respects_the_budget_and_keeps_every_token(examples, processor, base_model):
    lengths = [len(e["input_ids"]) for e in examples]
    budget = max(lengths) + min(lengths)
    rows = pack_by_tokens(examples, rope_index_for(base_model), budget)
    assert len(rows) > 1 and all(r["input_ids"].shape[1] <= budget for r in rows)
    assert torch.equal(torch.cat([r["input_ids"][0] for r in rows]), torch.cat([e["input_ids"] for e in examples]))


def test_block_causal_mask():
    m = block_causal_mask([2, 3])[0, 0] == 0
    want = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]).bool()
    assert torch.equal(m, want)


def test_token_figures_count_padding():
    # Lengths 10, 4, 6, 6 in micro-batches of 2: steps compute 2·10 and 2·6 positions for 14 and 12 tokens.
    padded = padded_figures([10, 4, 6, 6], 2)
    assert padded["micro_steps"] == 2 and padded["computed_tokens_per_step"] == 16
    assert padded["padding_fraction"] == pytest.approx(1 - 26 / 32)
    packed = packed_figures([10, 4, 6, 6], 16)  # [10, 4] then [6, 6]
    assert packed["micro_steps"] == 2 and packed["computed_tokens_per_step"] == 13 and packed["padding_fraction"] == 0


def test_other_families_raise(tmp_path):
    from fusionrs.dev.tiny_vlm import write_tiny_llava

    model = load_model(write_tiny_llava(tmp_path / "llava"))
    with pytest.raises(UnsupportedFamily, match="not 'llava'"):
        rope_index_for(model)


def test_the_trainer_step_packs_when_asked_and_gets_the_same_loss(tmp_path):
    """VlmStep (the trainer's VLM step) with `packing: true` on a micro-batch of real instruction
    rows: one padding-free row, the same loss as the padded micro-batch, all tokens real."""
    import io as _io

    import numpy as _np
    from PIL import Image as _Image

    from fusionrs.config import VlmTrainConfig, load_config
    from fusionrs.dev.tiny_vlm import write_tiny_qwen2_5_vl
    from fusionrs.train.vlm.instructions import INSTRUCTIONS
    from fusionrs.train.vlm.step import VlmStep

    model_dir = write_tiny_qwen2_5_vl(tmp_path / "m")
    rows = {"ir_jpeg": [], "instruction": [], "response": []}
    for i, (task, resp) in enumerate([("caption", "a bright runway beside dark grass"), ("scene", "airport"),
                                      ("object", "runway, airplane, grass")]):
        buf = _io.BytesIO()
        _Image.fromarray(_np.full((56 + 28 * i, 56, 3), 40 * i + 60, _np.uint8)).save(buf, "JPEG")
        rows["ir_jpeg"].append(buf.getvalue())
        rows["instruction"].append(INSTRUCTIONS[task])
        rows["response"].append(resp)
    losses = {}
    for packing in (False, True):
        cfg = load_config(None, ["data=x", f"model.path={model_dir}", "model.max_pixels=3136", "parallel.bf16=false",
                                 f"packing={str(packing).lower()}", "lora.dropout=0"], cls=VlmTrainConfig)
        step = VlmStep(cfg, {})
        torch.manual_seed(0)
        model = step.build_model(torch.device("cpu")).eval()
        loss, _, tokens = step.loss(model, rows, torch.device("cpu"))
        losses[packing] = (float(loss), tokens)
    assert losses[True][0] == pytest.approx(losses[False][0], abs=1e-5)
    assert losses[True][1] == losses[False][1]  # the pack's tokens are exactly the batch's real (unpadded) ones
