"""Padding-free sequence packing for VLM tuning: several encoded examples in one row.

    python -m fusionrs.train.vlm.packing --model out/tiny-qwen2_5_vl      # padded vs packed tokens/micro-step

A right-padded batch (chat.collate) computes `micro_batch_size × longest` positions per micro-step;
a pack computes exactly the examples' tokens. `pack` turns the dicts `chat.encode_example`
returns into one row the model reads as independent sequences:

- input_ids, labels and every other per-token tensor are concatenated; there is no padding
  and no attention_mask (a 2-D mask of ones would switch transformers' packed detection off);
- each example's first label becomes IGNORE: in a pack the token before it is the previous
  example's last token, which alone predicts nothing (the causal-LM loss shifts labels by one);
  the first label is always a prompt token (already IGNORE), so this is a guard, not a change;
- position_ids are [4, 1, T]: row 0 the text positions restarting at 0 for each example, rows
  1–3 the example's 3-D rope indices (temporal, height, width) computed by the model's own
  `get_rope_index` on that example alone, so image tokens keep their spatial positions;
- image tensors are concatenated in order: Qwen flattens patches of all images into
  pixel_values [Σ patches, C·t·p·p] and reads each image's patch count from image_grid_thw.

Attention never crosses examples. transformers (5.x) reads the 4-row position_ids as packed
when no attention_mask and no KV cache are passed: the text row's restarts split the row into
sequences, and it builds a block-diagonal causal mask (sdpa, eager: both checked by the tests on
CPU) or, for flash_attention_2, cu_seqlens for its varlen kernel (transformers' packed path from
position_ids; not checked here: it needs the GPU and flash-attn). The vision tower already
attends within each image (cu_seqlens from image_grid_thw). Run a pack with `forward_packed`,
which turns the cache off: Qwen2.5-VL's text config defaults to use_cache=True, and with a
cache transformers ignores the restarts, so attention would silently cross examples.
`pack(..., explicit_mask=True)` passes the block-diagonal mask as a 4-D additive mask instead
(eager/sdpa only), should a transformers version stop detecting packing (tests compare both).
(flex_attention: transformers 5.24 does not support it for Qwen2.5-VL.)

Family-aware: only Qwen2.5-VL is supported (its 3-D rope is what needs care). LLaVA and
InstructBLIP raise UnsupportedFamily; see docs/vlm-packing.md for what each would need.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel

from fusionrs.train.vlm.chat import IGNORE, decode_image, encode_example
from fusionrs.train.vlm.model import load_processor

SUPPORTED_FAMILIES = ("qwen2_5_vl",)
DROPPED_KEYS = ("attention_mask",)  # padding-free: see the module docstring
# What the model's get_rope_index reads besides input_ids, when the processor produced it.
ROPE_INPUTS = ("mm_token_type_ids", "image_grid_thw", "video_grid_thw", "second_per_grid_ts")
PER_TOKEN_ROPE_INPUTS = ("mm_token_type_ids",)  # [L] in an example, [1, L] for the model


class UnsupportedFamily(ValueError):
    pass


def hf_model(model: torch.nn.Module) -> PreTrainedModel:
    """The outermost Hugging Face model inside peft / DDP / DeepSpeed wrappers."""
    for m in model.modules():
        if isinstance(m, PreTrainedModel):
            return m
    raise TypeError(f"{type(model).__name__} holds no transformers PreTrainedModel")


def model_family(model: torch.nn.Module) -> str:
    return hf_model(model).config.model_type


def check_family(family: str) -> None:
    if family not in SUPPORTED_FAMILIES:
        raise UnsupportedFamily(
            f"sequence packing supports {', '.join(SUPPORTED_FAMILIES)}, not {family!r}: "
            "train it with packing off (right-padded batches)")


def rope_index_for(model: torch.nn.Module) -> Callable:
    """The model's own 3-D rope index function (Qwen2_5_VLModel.get_rope_index), found through
    any wrapper. Packing calls it on each example alone, so positions are exactly the model's."""
    check_family(model_family(model))
    for m in model.modules():
        fn = getattr(m, "get_rope_index", None)
        if callable(fn):
            return fn
    raise UnsupportedFamily(f"{type(hf_model(model)).__name__} has no get_rope_index")


def example_length(example: dict) -> int:
    return int(example["input_ids"].shape[0])


def example_positions(example: dict, rope_index: Callable) -> torch.Tensor:
    """[4, L]: the text positions 0..L-1, then the 3-D rope positions the model computes for this
    example alone (as in an unpadded batch of one)."""
    ids = example["input_ids"]
    if "attention_mask" in example and not bool(example["attention_mask"].all()):
        raise ValueError("packing takes unpadded examples (chat.encode_example), not collated rows")
    extra = {k: example[k][None] if k in PER_TOKEN_ROPE_INPUTS else example[k] for k in ROPE_INPUTS if k in example}
    rope, _ = rope_index(ids[None], attention_mask=torch.ones_like(ids)[None], **extra)  # [3, 1, L]
    text = torch.arange(len(ids), dtype=rope.dtype, device=rope.device)
    return torch.cat([text[None], rope[:, 0]])


def pack(examples: Sequence[dict], rope_index: Callable, explicit_mask: bool = False,
         mask_dtype: torch.dtype = torch.float32) -> dict:
    """One padding-free row from encoded examples (chat.encode_example); run it with forward_packed.

    explicit_mask: also pass the block-diagonal causal mask as a 4-D additive mask of mask_dtype
    (the model's compute dtype) — eager/sdpa only; flash attention needs the positions path."""
    if not examples:
        raise ValueError("nothing to pack")
    lengths = [example_length(e) for e in examples]
    row: dict = {}
    for key, first in examples[0].items():
        if key in DROPPED_KEYS:
            continue
        if first.ndim == 1 and len(first) == lengths[0]:  # per token
            parts = [e[key] for e in examples]
            if key == "labels":
                parts = [torch.cat([torch.full_like(p[:1], IGNORE), p[1:]]) for p in parts]
            row[key] = torch.cat(parts)[None]
        elif first.ndim == 5:  # LLaVA-NeXT tiles: not reached (family check) — kept explicit
            raise UnsupportedFamily("per-image tile tensors ([1, tiles, C, H, W]) are not packed")
        else:  # per image / patch: in example order, as collate does
            row[key] = torch.cat([e[key] for e in examples])
    row["position_ids"] = torch.cat([example_positions(e, rope_index) for e in examples], dim=1)[:, None]
    if explicit_mask:
        row["attention_mask"] = block_causal_mask(lengths, mask_dtype)
    return row


def forward_packed(model: torch.nn.Module, row: dict):
    """model(**row) with the KV cache off. transformers reads packed position_ids only when no
    cache is in use, and Qwen2.5-VL's text model defaults to use_cache=True (the text config's,
    not the top-level config's): with a cache, attention silently crosses examples. (Training with
    gradient checkpointing turns the cache off too, but eval mode or checkpointing off would not.)"""
    return model(**row, use_cache=False)


def block_causal_mask(lengths: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[1, 1, T, T] additive mask: 0 where query i may attend key j (same example, j ≤ i), the
    dtype's minimum elsewhere."""
    seq = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(list(lengths)))
    pos = torch.arange(len(seq))
    allowed = (seq[:, None] == seq[None, :]) & (pos[None, :] <= pos[:, None])
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


def plan_packs(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped in order, greedily, into packs of at most max_tokens tokens each.

    In order (no reordering): the trainer's shuffle already decides which rows go together, and
    keeping it makes packed and padded runs see the same examples in the same sequence."""
    if max_tokens <= 0:
        raise ValueError("max_tokens must be positive")
    packs: list[list[int]] = []
    total = 0
    for i, n in enumerate(lengths):
        if n > max_tokens:
            raise ValueError(f"example {i} has {n} tokens, more than max_tokens={max_tokens}: "
                             "raise the budget (packing never truncates: the loss would change)")
        if packs and total + n <= max_tokens:
            packs[-1].append(i)
            total += n
        else:
            packs.append([i])
            total = n
    return packs


def pack_by_tokens(examples: Sequence[dict], rope_index: Callable, max_tokens: int, **pack_kwargs) -> list[dict]:
    """Encoded examples → packed rows of at most max_tokens tokens each (plan_packs, then pack)."""
    plan = plan_packs([example_length(e) for e in examples], max_tokens)
    return [pack([examples[i] for i in group], rope_index, **pack_kwargs) for group in plan]


def supervised_tokens(labels: torch.Tensor) -> int:
    """Tokens the causal-LM loss averages over: labels shifted by one, IGNORE excluded. The
    model's loss (and this module's packs) is the mean over exactly these, so a pack's loss equals
    a padded batch's over the same examples; across micro-steps of different counts, weight by it."""
    return int((labels[..., 1:] != IGNORE).sum())


# --- Tokens per micro-step: padded batches vs packs -------------------------------------------

def padded_figures(lengths: Sequence[int], micro_batch_size: int) -> dict:
    """Consecutive groups of micro_batch_size examples, right-padded to each group's longest."""
    groups = [lengths[i:i + micro_batch_size] for i in range(0, len(lengths), micro_batch_size)]
    return _figures(f"padded, micro_batch_size={micro_batch_size}", [max(g) * len(g) for g in groups],
                    [sum(g) for g in groups], [len(g) for g in groups])


def packed_figures(lengths: Sequence[int], max_tokens: int) -> dict:
    groups = [[lengths[i] for i in g] for g in plan_packs(lengths, max_tokens)]
    return _figures(f"packed, max_tokens={max_tokens}", [sum(g) for g in groups], [sum(g) for g in groups],
                    [len(g) for g in groups])


def _figures(mode: str, computed: list[int], real: list[int], examples: list[int]) -> dict:
    return {"mode": mode, "micro_steps": len(computed), "examples_per_step": statistics.mean(examples),
            "computed_tokens_per_step": statistics.mean(computed), "real_tokens_per_step": statistics.mean(real),
            "max_computed_tokens": max(computed), "padding_fraction": 1 - sum(real) / sum(computed)}


def figures_table(lengths: Sequence[int], micro_batch_sizes: Sequence[int], budgets: Sequence[int]) -> str:
    rows = [padded_figures(lengths, b) for b in micro_batch_sizes] + [packed_figures(lengths, t) for t in budgets]
    out = ["| mode | micro-steps | examples/step | computed tokens/step (mean) | real tokens/step (mean) "
           "| max computed tokens/step | padding |", "|---|---|---|---|---|---|---|"]
    out += [f"| {r['mode']} | {r['micro_steps']} | {r['examples_per_step']:.2f} | {r['computed_tokens_per_step']:.1f} "
            f"| {r['real_tokens_per_step']:.1f} | {r['max_computed_tokens']} | {100 * r['padding_fraction']:.1f}% |"
            for r in rows]
    return "\n".join(out)


def demo_instruction_lengths(processor, per_source: int = 24, seed: int = 0) -> list[int]:
    """Token lengths of instruction rows made the way the demo build makes them, without the
    build (no Ray): the sample generator's records (planted dirt left out), their pseudo-IR image
    and `cues` IR-aware caption, B-iraware rows of all four tasks, encoded by chat.encode_example."""
    # Dev tooling, imported here: only the measurement command needs the sample generator and the
    # build's offline captioner; the training path (pack, plan_packs) must not pull them in.
    from fusionrs.build.caption.cues import compose, measure_cues
    from fusionrs.build.translate.pseudo_ir import pseudo_ir_image
    from fusionrs.dev.sample import generate_records
    from fusionrs.train.vlm.instructions import instruction_rows

    lengths = []
    for source, recs in generate_records(per_source, seed).records.items():
        for i, rec in enumerate(r for r in recs if r.plant is None):
            ir = pseudo_ir_image(decode_image(rec.image), 256)
            caption = rec.captions[0]
            batch = {"sample_id": [f"{source}-{i}"], "source": [source], "caption": [caption],
                     "ir_aware_caption": [compose(caption, measure_cues(ir))],
                     "class_name": [rec.cls if source == "NWPU" else None]}
            rows = instruction_rows(batch, "B-iraware")
            lengths += [example_length(encode_example(processor, ir, ins, resp))
                        for ins, resp in zip(rows["instruction"], rows["response"])]
    return lengths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a Qwen2.5-VL folder (the tiny one: fusionrs tiny-model)")
    ap.add_argument("--max-pixels", type=int, default=3136)
    ap.add_argument("--per-source", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--micro-batch-sizes", default="1,4,8,16")
    ap.add_argument("--budgets", default="256,512,1024,2048")
    a = ap.parse_args(argv)
    lengths = demo_instruction_lengths(load_processor(a.model, a.max_pixels), a.per_source, a.seed)
    random.Random(a.seed).shuffle(lengths)  # the trainer shuffles rows; a fixed order for the table
    print(f"{len(lengths)} rows; tokens min {min(lengths)}, median {statistics.median(lengths)}, "
          f"mean {statistics.mean(lengths):.1f}, max {max(lengths)}")
    print(figures_table(lengths, [int(b) for b in a.micro_batch_sizes.split(",")],
                        [int(t) for t in a.budgets.split(",")]))


if __name__ == "__main__":
    main()
