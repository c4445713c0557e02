"""Chat rendering, tokenization and assistant-only labels, for any processor with a chat template.

The prompt (system + user turn with the image and the instruction, ending in the assistant
header) is rendered with `add_generation_prompt=True`; the full example adds the assistant turn.
The full example goes through the processor, which expands the image placeholder into the
model's image tokens; the prompt, expanded the same way, is tokenized alone, and its token count
is exactly what to mask: labels are −100 over the prompt
(system, instruction, image tokens, assistant header), over padding and over template text after
the end token; the response and its end token (`<|im_end|>` for Qwen) carry labels. The official code masks up to the last assistant
header, which is the same set of tokens for these templates, but needs the header's token IDs of
each model family.

Two images per row (`inputs: rgb+ir`): the user turn carries the RGB image, then its IR image.
Processors that take several images per turn (Qwen2.5-VL, LLaVA-NeXT: MULTI_IMAGE) get both; a
single-image model (LLaVA-1.5, GeoChat, H2RSVLM, BLIP-2, InstructBLIP) gets one side-by-side
picture, RGB left and IR right at the same height, and the instruction says so (`model_view`).
Masking counts each image's expanded tokens separately, so it holds for any number of images.
"""

from __future__ import annotations

import io

import torch
from PIL import Image

IGNORE = -100
# For processors that ship no chat template (InstructBLIP checkpoints): the instruction, then
# the answer and the end token, as InstructBLIP was tuned (instruction in, answer out).
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}{% for content in message['content'] %}{% if content['type'] == 'text' %}"
    "{% if message['role'] == 'assistant' %} {{ content['text'] }}EOS{% else %}{{ content['text'] }}{% endif %}"
    "{% endif %}{% endfor %}{% endfor %}")


# Processor classes that read several images in one user turn; others see a side-by-side picture.
MULTI_IMAGE = ("Qwen2_5_VLProcessor", "Qwen2VLProcessor", "LlavaNextProcessor")
SIDE_BY_SIDE_NOTE = "The left half of the picture is the RGB image and the right half its infrared counterpart. "


def messages(instruction: str, response: str | None = None, n_images: int = 1) -> list[dict]:
    content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": instruction}]
    msgs = [{"role": "user", "content": content}]
    if response is not None:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": response}]})
    return msgs


def decode_image(jpeg: bytes):
    img = Image.open(io.BytesIO(jpeg))
    img.load()
    return img.convert("RGB")


def takes_several_images(processor) -> bool:
    return type(processor).__name__ in MULTI_IMAGE


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    """`left | right` at the left image's height (right resized, aspect kept)."""
    h = left.height
    right = right if right.height == h else right.resize((max(1, round(right.width * h / right.height)), h),
                                                         Image.BICUBIC)
    out = Image.new("RGB", (left.width + right.width, h))
    out.paste(left.convert("RGB"), (0, 0))
    out.paste(right.convert("RGB"), (left.width, 0))
    return out


def model_view(processor, images: list, instruction: str) -> tuple[list, str]:
    """What the model reads for one row: its images and its instruction. One image passes as it
    is; RGB + IR go in as two images where the processor takes several, else as one side-by-side
    picture with a sentence saying which half is which."""
    if len(images) == 1 or takes_several_images(processor):
        return list(images), instruction
    if len(images) != 2:
        raise ValueError(f"{type(processor).__name__} takes one image per turn; side by side fits two, not {len(images)}")
    return [side_by_side(*images)], SIDE_BY_SIDE_NOTE + instruction


def _as_list(image) -> list:
    return list(image) if isinstance(image, (list, tuple)) else [image]


def encode_example(processor, image, instruction: str, response: str) -> dict:
    """One training example: input_ids, attention_mask, labels (1-D lists) and the image tensors.
    `image`: one PIL image, or a list (RGB then IR) for dual-image rows."""
    images, instruction = model_view(processor, _as_list(image), instruction)
    prompt = processor.apply_chat_template(messages(instruction, n_images=len(images)), tokenize=False,
                                           add_generation_prompt=True)
    full = processor.apply_chat_template(messages(instruction, response, len(images)), tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently with and without the answer; "
                         "assistant-only masking needs the prompt to be a prefix")
    enc = processor(text=[full], images=[images] if len(images) > 1 else images, return_tensors="pt")
    if "qformer_input_ids" in enc:  # InstructBLIP: the Q-Former reads the prompt, as at generation, never the answer
        q = processor.qformer_tokenizer([prompt], return_tensors="pt")
        enc["qformer_input_ids"], enc["qformer_attention_mask"] = q["input_ids"], q["attention_mask"]
    ids = enc["input_ids"][0]
    # The prompt's length with its image placeholders expanded as the processor expanded them in
    # the full example: the images are preprocessed once per example, not once more for the prompt.
    image_token = str(getattr(processor.image_token, "content", processor.image_token))
    image_id = processor.tokenizer.convert_tokens_to_ids(image_token)
    n_image = int((ids == image_id).sum())
    if image_token in prompt:
        prompt_ids = processor.tokenizer(expand_placeholders(prompt, image_token, image_runs(ids, image_id)),
                                         return_tensors="pt")["input_ids"][0]
    else:  # InstructBLIP: the processor puts the query tokens before the text, outside the template
        text_ids = processor.tokenizer(prompt, return_tensors="pt")["input_ids"][0]
        prompt_ids = torch.cat([torch.full((n_image,), image_id, dtype=text_ids.dtype), text_ids])
    n_prompt = len(prompt_ids)
    if n_prompt >= len(ids) or not bool((ids[:n_prompt] == prompt_ids).all()):
        raise ValueError("prompt tokens are not a prefix of the full example's tokens")
    labels = ids.clone()
    labels[:n_prompt] = IGNORE
    # Template text after the end-of-turn token (Qwen's "\n") is formatting, not answer: a model
    # taught to emit it learns a frequent token that greedy decoding then repeats.
    eos = processor.tokenizer.eos_token_id
    ends = (ids[n_prompt:] == eos).nonzero()
    if eos is not None and len(ends):
        labels[n_prompt + int(ends[-1]) + 1:] = IGNORE
    if int((labels != IGNORE).sum()) == 0:
        raise ValueError("no supervised tokens: the response is empty after tokenization")
    # Per-token tensors ([1, L]: ids, mask, token types; InstructBLIP's Q-Former ids and mask)
    # become 1-D; image tensors stay as they are.
    out = {k: (v[0] if v.ndim == 2 and (v.shape == enc["input_ids"].shape or k.startswith("qformer_")) else v)
           for k, v in enc.items()}
    out["labels"] = labels
    return out


def image_runs(ids: torch.Tensor, image_id: int) -> list[int]:
    """Lengths of the runs of consecutive image tokens, in order (one run per image, or per group
    of placeholders with nothing between them)."""
    runs, n = [], 0
    for is_image in (ids == image_id).tolist() + [False]:
        if is_image:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def expand_placeholders(prompt: str, image_token: str, runs: list[int]) -> str:
    """Each group of adjacent placeholders in `prompt` becomes its run of image tokens."""
    pieces = prompt.split(image_token)
    groups = [i for i in range(1, len(pieces)) if i == 1 or pieces[i - 1] != ""]  # a new group after text
    if len(groups) != len(runs):
        raise ValueError(f"{len(pieces) - 1} image placeholders in {len(groups)} groups, but {len(runs)} runs of "
                         "image tokens after the processor: cannot tell which tokens belong to which image")
    out, run = pieces[0], iter(runs)
    for i in range(1, len(pieces)):
        out += (image_token * next(run) if i in groups else "") + pieces[i]
    return out


def collate(examples: list[dict], pad_id: int) -> dict:
    """Right-padded batch; image tensors concatenated (Qwen flattens patches across images).

    LLaVA-NeXT gives each image [1, tiles, 3, H, W] with a tile count that follows its aspect
    ratio: tiles are zero-padded to the batch's most, as its processor pads a batch, and the
    model reads each image's real count from `image_sizes`."""
    fill = {"input_ids": pad_id, "labels": IGNORE}  # masks and the Q-Former's ids pad with 0 (masked out)
    batch = {}
    for key, first in examples[0].items():
        if first.ndim == 1:  # per token: pad on the right to the batch's longest
            n = max(len(e[key]) for e in examples)
            batch[key] = torch.stack([torch.nn.functional.pad(e[key], (0, n - len(e[key])), value=fill.get(key, 0))
                                      for e in examples])
        elif first.ndim == 5:  # [1, tiles, C, H, W]
            tiles = max(e[key].shape[1] for e in examples)
            batch[key] = torch.cat([torch.nn.functional.pad(e[key], (0, 0, 0, 0, 0, 0, 0, tiles - e[key].shape[1]))
                                    for e in examples])
        else:
            batch[key] = torch.cat([e[key] for e in examples])
    return batch


def generation_inputs(processor, images: list, instructions: list[str]):
    """Left-padded prompts for batched greedy decoding. Each entry of `images` is one PIL image or
    a list (RGB then IR) for dual-image rows."""
    processor.tokenizer.padding_side = "left"
    views = [model_view(processor, _as_list(im), ins) for im, ins in zip(images, instructions)]
    prompts = [processor.apply_chat_template(messages(ins, n_images=len(ims)), tokenize=False,
                                             add_generation_prompt=True) for ims, ins in views]
    several = any(len(ims) > 1 for ims, _ in views)
    pixels = [ims for ims, _ in views] if several else [ims[0] for ims, _ in views]
    return processor(text=prompts, images=pixels, return_tensors="pt", padding=True)
