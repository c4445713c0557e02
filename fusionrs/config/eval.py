"""The evaluation config: which models, on which data, and how Ray runs the passes.

    python -m jobs.evaluate --config configs/eval-demo.yaml clip.checkpoints.mine=out/train/clip/export/best.pt
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from fusionrs.config.loader import ConfigError, choice, in_range, positive
from fusionrs.config.train import VLM_INPUTS, VLM_TASKS, ClipModelConfig


@dataclass(kw_only=True)
class ComputeConfig:
    """The Ray Data passes that embed or generate (actor pools: GPU actors on a cluster)."""

    actors: int = 1  # model replicas (one per GPU)
    num_gpus: float = 0.0  # per actor
    batch_size: int = 16  # rows per model call

    def validate(self, where: str) -> None:
        positive(where, actors=self.actors, batch_size=self.batch_size)
        in_range(f"{where}.num_gpus", self.num_gpus, 0, 64)


@dataclass(kw_only=True)
class ClipEvalConfig:
    """Retrieval (six directions, Mean R, per source) and zero-shot IR scene classification."""

    model: ClipModelConfig = field(default_factory=ClipModelConfig)  # model.pretrained is not used here
    checkpoints: dict[str, str] = field(default_factory=dict)  # name → checkpoint file or open_clip tag


@dataclass(kw_only=True)
class VlmEvalConfig:
    """Generative evaluation (captioning, scene / object / IR-cue QA) with bootstrap CIs."""

    model: str = ""  # the base model: a Hugging Face folder, local or s3://
    adapters: dict[str, str] = field(default_factory=dict)  # name → LoRA adapter folder; "" = the base model alone
    inputs: dict[str, str] = field(default_factory=dict)  # name → ir | rgb+ir; default: what the adapter was trained with, else ir
    tasks: list[str] = field(default_factory=lambda: list(VLM_TASKS))
    max_pixels: int = 0  # the processor's image budget (0: its own)
    min_pixels: int = 0  # the processor's smallest image budget (0: its own)
    bootstrap: int = 1000  # resamples for the 95% CIs

    def validate(self, where: str) -> None:
        for t in self.tasks:
            choice(f"{where}.tasks[]", t, VLM_TASKS)
        for name, mode in self.inputs.items():
            choice(f"{where}.inputs.{name}", mode, VLM_INPUTS)
        if self.adapters and not self.model:
            raise ConfigError(f"{where}.model: required with {where}.adapters")


@dataclass(kw_only=True)
class HitUavConfig:
    """HIT-UAV real thermal images (docs/evaluation.md)."""

    root: str = ""  # a HIT-UAV release folder: test.json (or Annotations/*.xml) beside the images; "" = skip
    probe_root: str = ""  # the linear probe: a folder with train.json, val.json, test.json and train/ val/ test/ images; "" = skip
    seed: int = 20260726  # the official VQA builder's seed


@dataclass(kw_only=True)
class CaltechConfig:
    """Caltech Aerial RGB-T exact-pair retrieval (docs/evaluation.md)."""

    dataset_root: str = ""  # the dataset folder the split files' paths are relative to; "" = skip
    splits_root: str = ""  # folder of rgb_<split>.txt and thermal8_<split>.txt ("" = dataset_root)
    split: str = "test"


@dataclass(kw_only=True)
class BenchmarksConfig:
    """Which benchmarks the evaluation job runs; one with missing data is skipped and says why."""

    fusionrs: bool = True  # the build's split: retrieval + zero-shot scene (CLIP), Table 5 + output audit (VLM)
    fusion: bool = True  # CLIP dual-modal fusion: the RGB weight chosen on val, reported on the split
    hit_uav: HitUavConfig = field(default_factory=HitUavConfig)
    caltech: CaltechConfig = field(default_factory=CaltechConfig)


@dataclass(kw_only=True)
class EvalConfig:
    data: str = ""  # the build's output URI
    split: str = "test"  # val | test
    out: str = "out/eval"  # results folder, local or s3://
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    clip: ClipEvalConfig = field(default_factory=ClipEvalConfig)
    vlm: VlmEvalConfig = field(default_factory=VlmEvalConfig)
    benchmarks: BenchmarksConfig = field(default_factory=BenchmarksConfig)

    def validate(self) -> None:
        if not self.data:
            raise ConfigError("data: the build output URI is required")
        choice("split", self.split, ("val", "test"))
        if not self.clip.checkpoints and not self.vlm.model:
            raise ConfigError("nothing to evaluate: give clip.checkpoints.NAME=PATH or vlm.model=PATH")

    def resolve(self) -> None:
        b = self.benchmarks
        for obj, key in ((self, "data"), (self, "out"), (self.clip.model, "config_json"), (self.vlm, "model"),
                         (b.hit_uav, "root"), (b.hit_uav, "probe_root"), (b.caltech, "dataset_root"),
                         (b.caltech, "splits_root")):
            v = getattr(obj, key)
            if v and "://" not in v and not os.path.isabs(v) and (key == "out" or os.path.exists(v)):
                setattr(obj, key, os.path.abspath(v))
