"""The build's `diffv2ir` translate stage: per-image geometry, prompts, segmentation maps,
per-sample seeds, batches of one size, and per-row validation (NaN, blank, decode failure
become reason-coded rejects). The model loads lazily, once per actor, on its first batch.

Identity (fingerprint, manifest) is `identity(cfg, meta)`: the config and the converted model's
metadata, never the machine. `dtype: auto` stays "auto" there (the rule: bf16 on GPU, fp32 on
CPU); the dtype and device each actor actually used are recorded where it ran (`runtime()`),
in every IR stage file's metadata, and summed up in the manifest.

Speed levers (translate.compile, channels_last, attention, fp8; pipeline.Levers) are applied
once, when the model loads. Only fp8 changes the numbers beyond rounding, so only fp8 enters the
identity, and only when on: outputs made without it keep their fingerprints. fp8 is checked
when the translator is made (in the actor, on its GPU), so a pool without FP8 GPUs or torchao
fails at start with the reason, before any part is read."""

from __future__ import annotations

import dataclasses
import io
import logging
from collections import defaultdict

import torch
from PIL import Image

from fusionrs.build.translate.diffv2ir.pipeline import (
    DiffV2IRPipeline,
    Levers,
    SamplingConfig,
    fit,
    require_fp8,
    sample_seed,
    upstream_size,
)
from fusionrs.build.translate.validate import IR_NONFINITE, validate_ir_jpeg
from fusionrs.core.images import encode_jpeg
from fusionrs.core.models import ensure_local, read_model_json
from fusionrs.dataset.schema import IR_OK

log = logging.getLogger("fusionrs.translate.diffv2ir")
VERSION = "diffv2ir-1"
SEG_MISSING = "seg_map_missing"
# What translate.fp8 does, as it enters the identity (pipeline.quantize_fp8): the driver that
# fingerprints needs neither torchao nor a GPU to write it.
FP8_SCHEME = "torchao float8 e4m3, dynamic per-row activation and weight scales, transformer-block linears"


def model_meta(cfg, storage) -> dict:
    """The converter's record of the model folder (model id, source checkpoint SHA-256)."""
    meta = read_model_json(cfg.model, storage, "fusionrs_diffv2ir.json")
    if cfg.model_sha256 and meta.get("source_sha256") != cfg.model_sha256.lower():
        raise ValueError(f"translate.model was converted from a checkpoint with SHA-256 "
                         f"{meta.get('source_sha256')}, not the configured {cfg.model_sha256}")
    return meta


def identity(cfg, meta: dict) -> dict:
    return {"backend": "diffv2ir", "version": VERSION, "model_id": meta["model_id"],
            "source_sha256": meta.get("source_sha256"), "resolution": cfg.resolution, "steps": cfg.steps,
            "cfg": [cfg.cfg_text, cfg.cfg_image, cfg.cfg_seg], "seed": cfg.seed, "dtype": cfg.dtype,
            "seg": cfg.seg, "seg_path": cfg.seg_path, "prompt": cfg.prompt, "jpeg_quality": cfg.jpeg_quality,
            # Only when used, so that caption-prompted outputs keep their fingerprint.
            **({"prompt_caption": "blip", "blip_model": cfg.blip_model, "blip_max_new_tokens": cfg.blip_max_new_tokens}
               if cfg.prompt_caption == "blip" else {}),
            # FP8 changes the model's numbers; the other levers only the rounding (like batch size).
            **({"fp8": FP8_SCHEME} if cfg.fp8 else {})}


def levers(cfg) -> Levers:
    return Levers(compile=cfg.compile_mode(), channels_last=cfg.channels_last, attention=cfg.attention, fp8=cfg.fp8)


class DiffV2IRTranslator:
    """`compile_backend`: torch.compile's backend for translate.compile. Inductor in the build;
    CPU tests pass a lighter one (inductor's C++ build of the UNet's kernels takes minutes on 2 cores)."""

    def __init__(self, cfg, storage, compile_backend="inductor"):
        self.cfg, self.storage = cfg, storage
        self.meta = model_meta(cfg, storage)
        self.levers, self.compile_backend = levers(cfg), compile_backend
        if cfg.fp8:
            require_fp8(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        self.pipe: DiffV2IRPipeline | None = None
        self.sampling = SamplingConfig(steps=cfg.steps, cfg_text=cfg.cfg_text, cfg_image=cfg.cfg_image,
                                       cfg_seg=cfg.cfg_seg, branch_chunks=cfg.branch_chunks)
        self._white: dict[tuple[int, int], Image.Image] = {}
        self._sam = None
        self._blip = None

    def identity(self) -> dict:
        return identity(self.cfg, self.meta)

    def dtype_name(self) -> str:
        """Resolved here, in the process that runs the model (an actor on a GPU node)."""
        if self.cfg.dtype != "auto":
            return self.cfg.dtype
        return "bfloat16" if torch.cuda.is_available() else "float32"

    def runtime(self) -> dict:
        """Device, dtype and the levers that are on (they explain a part's seconds)."""
        off = dataclasses.asdict(Levers())
        on = {k: v for k, v in dataclasses.asdict(self.levers).items() if v != off[k]}
        return {"device": "cuda" if torch.cuda.is_available() else "cpu", "dtype": self.dtype_name(), **on}

    def _load(self) -> DiffV2IRPipeline:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        pipe = DiffV2IRPipeline.from_pretrained(ensure_local(self.cfg.model, self.storage), device=device,
                                                dtype=getattr(torch, self.dtype_name()))
        pipe.apply_levers(self.levers, self.cfg.batch_size, self.compile_backend)
        if self.levers.fp8 and self.levers.compile == "off":
            log.warning("translate.fp8 without translate.compile: the activation scaling runs as separate kernels "
                        "and can be slower than bf16")
        log.info("DiffV2IR %s loaded on %s (%s, %s)", self.meta["model_id"], device, self.dtype_name(), self.levers)
        return pipe

    # -- segmentation maps --------------------------------------------------------------
    def seg_map(self, row: dict, rgb: Image.Image, size: tuple[int, int]) -> Image.Image | None:
        mode = self.cfg.seg
        if mode == "white":
            return self._white.setdefault(size, Image.new("RGB", size, (255, 255, 255)))
        if mode == "precomputed":
            rid = row.get("source_record_id") or ""
            uri = self.cfg.seg_path.format(source=row.get("source", ""), sample_id=row["sample_id"],
                                           source_record_id=rid, stem=rid.rsplit("/", 1)[-1].rsplit(".", 1)[0])
            try:
                return fit(Image.open(io.BytesIO(self.storage.read_bytes(uri))), size)
            except (OSError, ValueError):
                return None
        from fusionrs.build.translate.diffv2ir.sam import sam_union_mask

        if self._sam is None:
            from fusionrs.build.translate.diffv2ir.sam import load_sam

            self._sam = load_sam(str(ensure_local(self.cfg.sam_model, self.storage)))
        return fit(sam_union_mask(self._sam, rgb), size)

    def blip_captions(self, images: list[Image.Image]) -> list[str]:
        if self._blip is None:
            from fusionrs.build.translate.diffv2ir.blip import BlipCaptioner

            self._blip = BlipCaptioner(str(ensure_local(self.cfg.blip_model, self.storage)),
                                       max_new_tokens=self.cfg.blip_max_new_tokens)
        return self._blip(images)

    # -- the stage ---------------------------------------------------------------------------
    # `prepare` (CPU: decode, geometry, segmentation maps, prompts, seeds) and `run` (the sampler
    # on the GPU, JPEG encoding, validation) are apart so a caller can prepare the next rows in a
    # thread while the GPU samples these (PIL's decode and resize release the GIL).
    def __call__(self, batch: dict) -> dict:
        return self.run(self.prepare(batch))

    def prepare(self, batch: dict) -> "Prepared":
        """Everything before the UNet; never loads it (a BLIP or SAM model, when configured, does load)."""
        n = len(batch["sample_id"])
        status = ["translate_error:unprocessed"] * n
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        prepared = {}
        for i in range(n):
            row = {k: batch[k][i] for k in batch}
            try:
                rgb = Image.open(io.BytesIO(row["rgb_jpeg"])).convert("RGB")
            except Exception as e:
                status[i] = f"translate_error:{type(e).__name__}"
                continue
            size = upstream_size(*rgb.size, self.cfg.resolution)
            seg = self.seg_map(row, rgb, size)
            if seg is None:
                status[i] = SEG_MISSING
                continue
            prepared[i] = (fit(rgb, size), seg, row.get("caption") or "", sample_seed(self.cfg.seed, row["sample_id"]))
            groups[size].append(i)
        if self.cfg.prompt_caption == "blip" and prepared:
            # Upstream prompts with a BLIP caption of the RGB image; greedy decoding, so reruns agree.
            idx = sorted(prepared)
            try:
                caps = self.blip_captions([prepared[i][0] for i in idx])
            except Exception as e:  # noqa: BLE001 - the rows say why; nothing is translated with a wrong prompt
                for i in idx:
                    status[i] = f"translate_error:blip_{type(e).__name__}"
                    groups[prepared.pop(i)[0].size].remove(i)
                caps = []
            for i, cap in zip(idx, caps):
                img, seg, _, seed = prepared[i]
                prepared[i] = (img, seg, cap, seed)
        prepared = {i: (img, seg, self.cfg.prompt.replace("{caption}", cap), seed)
                    for i, (img, seg, cap, seed) in prepared.items()}
        return Prepared(batch, status, dict(groups), prepared)

    def run(self, p: "Prepared") -> dict:
        if self.pipe is None:
            self.pipe = self._load()
        status, ir = list(p.status), [None] * len(p.status)
        for size, idx in p.groups.items():  # one size per UNet call
            for s in range(0, len(idx), self.cfg.batch_size):
                chunk = idx[s:s + self.cfg.batch_size]
                imgs, segs, prompts, seeds = zip(*(p.rows[i] for i in chunk))
                try:
                    outs = self.pipe(list(imgs), list(prompts), list(seeds), list(segs), self.sampling)
                except Exception as e:  # e.g. out of memory: the rows say so, the batch goes on
                    for i in chunk:
                        status[i] = f"translate_error:{type(e).__name__}"
                    continue
                for i, img in zip(chunk, outs):
                    if img is None:
                        status[i] = IR_NONFINITE
                        continue
                    data = encode_jpeg(img, self.cfg.jpeg_quality)
                    status[i] = validate_ir_jpeg(data, size)
                    ir[i] = data if status[i] == IR_OK else None
        return {**p.batch, "ir_jpeg": ir, "ir_status": status}


@dataclasses.dataclass
class Prepared:
    """One call's rows, ready for the sampler: statuses so far (failures are final), the row
    indices of each output size, and (image, segmentation map, prompt, seed) per usable row."""

    batch: dict
    status: list[str]
    groups: dict[tuple[int, int], list[int]]
    rows: dict[int, tuple]
