"""LLaVA-1.5, LLaVA-NeXT and InstructBLIP through the same code path as Qwen2.5-VL: tiny models written by
`fusionrs tiny-model`, loaded by `load_model`/`load_processor`, assistant-only labels, LoRA on
the language model only, a few training steps, adapter round trip, batched greedy generation.
(The Ray Train + DeepSpeed loop is family-agnostic and runs the tiny Qwen in test_vlm.py.)"""

import numpy as np
import pytest
import torch

from fusionrs.train.vlm.chat import IGNORE, collate, encode_example
from fusionrs.train.vlm.instructions import INSTRUCTIONS
from tests.vlm_checks import generates_a_batch, lora_steps_lower_the_loss

FAMILIES = {"llava": "LlavaForConditionalGeneration", "llava_next": "LlavaNextForConditionalGeneration",
            "instructblip": "InstructBlipForConditionalGeneration"}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    from fusionrs.cli import main

    out = tmp_path_factory.mktemp(request.param) / "model"
    assert main(["tiny-model", request.param, str(out)]) == 0
    return request.param, str(out)


def ir_image(h: int, w: int, seed: int = 0):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w), dtype=np.uint8)).convert("RGB")


def test_family_loads_masks_trains_and_round_trips(family, tmp_path):
    from fusionrs.train.vlm.model import add_lora, load_model, load_processor, lora_modules

    kind, path = family
    processor, model = load_processor(path), load_model(path)
    assert type(model).__name__ == FAMILIES[kind]

    # Assistant-only labels: exactly the response and the end token; the image tokens are masked.
    response = "a bright runway crosses dark fields"
    ex = encode_example(processor, ir_image(40, 60), INSTRUCTIONS["caption"], response)
    tok = processor.tokenizer
    assert tok.decode(ex["input_ids"][ex["labels"] != IGNORE]).strip() == response + tok.eos_token
    image_id = tok.convert_tokens_to_ids(str(getattr(processor.image_token, "content", processor.image_token)))
    assert (ex["input_ids"] == image_id).sum() > 0 and (ex["labels"] == image_id).sum() == 0
    if kind == "instructblip":  # the Q-Former reads the instruction, never the answer
        q = processor.qformer_tokenizer.decode(ex["qformer_input_ids"], skip_special_tokens=True)
        assert q == INSTRUCTIONS["caption"].lower() and "runway" not in q

    # LoRA on the decoder only: the vision tower and the projector stay frozen.
    targets = lora_modules(model)
    assert targets and all("language_model" in t for t in targets)
    torch.manual_seed(0)
    lora = add_lora(model, r=8, alpha=16, dropout=0.0)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)

    # Images of two aspect ratios in one batch (LLaVA-NeXT: 3 and 2 tiles).
    batch = collate([ex, encode_example(processor, ir_image(40, 40, 1), INSTRUCTIONS["caption"], "a harbor")],
                    tok.pad_token_id)
    lora_steps_lower_the_loss(lora, batch)

    lora.eval()
    lora.save_pretrained(tmp_path / "adapter")
    reloaded = load_model(path, adapter=str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, lora(**batch).logits)

    # Batched greedy generation from left-padded prompts of different lengths.
    generates_a_batch(reloaded, processor, [ir_image(40, 60), ir_image(40, 40, 1)])
