"""Training configs: the sections every run shares (run, data loading, optimiser, parallelism)
and one config per model family (CLIP, VLM) that adds its model section.

    python -m jobs.train_clip --config configs/clip-demo.yaml run.name=try-2 optim.lr=5e-4
    python -m jobs.train_vlm --help        # every key with its default and description
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from fusionrs.config.loader import ConfigError, choice, in_range, positive

CLIP_SETTINGS = ("580k-only", "A-original", "B-iraware", "C-mixed")
VLM_SETTINGS = ("A-original", "B-iraware", "C-mixed")
VLM_TASKS = ("caption", "scene", "object", "ir_cue")
VLM_INPUTS = ("ir", "rgb+ir")  # per row: the IR image, or the RGB image then its IR image


@dataclass(kw_only=True)
class RunConfig:
    """Where the run lives and how Ray Train runs it."""

    name: str = "run"  # Ray Train run name: the same name + storage_path resumes the run
    storage_path: str = "out/train"  # local path or s3://bucket/prefix (shared storage on a cluster)
    num_workers: int = 2  # training processes (one per GPU)
    use_gpu: bool = False  # one GPU per worker
    cpus_per_worker: float = 1.0  # CPUs per training worker
    max_failures: int = 1  # worker failures survived by restarting from the last checkpoint
    checkpoint_every: int = 500  # optimizer steps between checkpoints (one is also written every epoch)
    num_to_keep: int = 0  # checkpoints kept, ranked by the validation score (else by step); 0 = all. Ray keeps the latest too
    log_every: int = 10  # optimizer steps between metric lines (console, metrics.jsonl, TensorBoard)
    seed: int = 42  # model init and data order

    def validate(self, where: str) -> None:
        positive(where, num_workers=self.num_workers, checkpoint_every=self.checkpoint_every,
                 cpus_per_worker=self.cpus_per_worker, log_every=self.log_every)
        in_range(f"{where}.num_to_keep", self.num_to_keep, 0, 10**6)
        in_range(f"{where}.max_failures", self.max_failures, -1, 10**6)


@dataclass(kw_only=True)
class LoaderConfig:
    """How training rows reach the workers (Ray Data)."""

    materialize_below: int = 200_000  # rows: smaller sets are read once and fully shuffled every epoch; larger ones stream
    shuffle_buffer: int = 10_000  # streaming: rows in each worker's local shuffle buffer (spans many files)
    shuffle_files: bool = True  # streaming: the order of files (and their rows' blocks) is randomised every epoch

    def validate(self, where: str) -> None:
        in_range(f"{where}.materialize_below", self.materialize_below, 0, 10**12)
        in_range(f"{where}.shuffle_buffer", self.shuffle_buffer, 0, 10**9)


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW, linear warmup then cosine decay to zero (the official CLIP schedule)."""

    lr: float = 1e-4  # peak learning rate
    weight_decay: float = 0.0  # not applied to biases, norms and scalars
    warmup_steps: int = 0  # optimizer steps; with warmup_ratio > 0, the ratio of all steps wins
    warmup_ratio: float = 0.0  # warmup as a share of all optimizer steps (0: use warmup_steps)
    epochs: int = 1  # passes over the training rows
    grad_accum: int = 1  # micro-batches per optimizer step
    grad_clip: float = 1.0  # max gradient norm; 0 = no clipping (the official CLIP code does not clip)
    fused: bool = False  # torch's fused AdamW kernel (one kernel per step for all parameters; CUDA, CPU)

    def validate(self, where: str) -> None:
        in_range(f"{where}.lr", self.lr, 0, 1)
        in_range(f"{where}.warmup_ratio", self.warmup_ratio, 0, 1)
        positive(where, epochs=self.epochs, grad_accum=self.grad_accum)
        in_range(f"{where}.warmup_steps", self.warmup_steps, 0, 10**9)
        in_range(f"{where}.grad_clip", self.grad_clip, 0, 1e9)


@dataclass(kw_only=True)
class ParallelConfig:
    """Data parallelism: DeepSpeed ZeRO or plain DDP."""

    strategy: str = "deepspeed"  # deepspeed | ddp
    zero_stage: int = 2  # deepspeed: 0-3 (3 partitions the weights too)
    bf16: bool = False  # bf16 weights and compute (GPU); fp32 on CPU
    compile: str = ""  # torch.compile mode for the model's towers: "" (off) | default | reduce-overhead | max-autotune

    def validate(self, where: str) -> None:
        choice(f"{where}.strategy", self.strategy, ("deepspeed", "ddp"))
        choice(f"{where}.compile", self.compile, ("", "default", "reduce-overhead", "max-autotune"))
        choice(f"{where}.zero_stage", self.zero_stage, (0, 1, 2, 3))


@dataclass(kw_only=True)
class ClipModelConfig:
    """An open_clip backbone and its starting weights."""

    name: str = "ViT-B-32"  # open_clip model name
    pretrained: str = ""  # open_clip tag (downloads) or a checkpoint file (local or s3://)
    config_json: str = ""  # JSON model config for a model open_clip does not know (e.g. the tiny debug model)
    quick_gelu: bool = False  # OpenAI weights: the -quickgelu variants


@dataclass(kw_only=True)
class VlmModelConfig:
    """A Hugging Face image-text-to-text model folder."""

    path: str = "Qwen/Qwen2.5-VL-7B-Instruct"  # local folder or s3:// URI (copied once per node)
    # flash_attention_2 (needs the flash-attn package, GPU): Qwen2.5-VL's vision tower then runs its
    # windowed attention as one variable-length call per layer; sdpa issues one call per window.
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2
    gradient_checkpointing: bool = True  # recompute activations in backward: less memory, ~30% more compute
    max_pixels: int = 401_408  # Qwen image budget (512·28·28), as the official run
    min_pixels: int = 0  # 0: the processor's own

    def validate(self, where: str) -> None:
        choice(f"{where}.attn_implementation", self.attn_implementation, ("sdpa", "eager", "flash_attention_2"))


@dataclass(kw_only=True)
class LoraConfig:
    """LoRA on the language model's attention and MLP projections (train/vlm/model.py)."""

    r: int = 32  # paper: r=32, α=64; the official adapters: r=16, α=32 (recipe vlm-official-r16)
    alpha: int = 64  # LoRA scaling numerator (scale = alpha / r)
    dropout: float = 0.05  # dropout on the LoRA input
    targets: str = ""  # module-name regex; "" = the language model's q/k/v/o and gate/up/down projections

    def validate(self, where: str) -> None:
        positive(where, r=self.r, alpha=self.alpha)
        in_range(f"{where}.dropout", self.dropout, 0, 1)


@dataclass(kw_only=True)
class TrackingConfig:
    """Experiment trackers beside TensorBoard and metrics.jsonl (always written): MLflow and W&B
    through Ray Train's integrations, from rank 0. Off by default; nothing needs a network."""

    mlflow_uri: str = ""  # MLflow tracking URI (http://host:5000, databricks, or file:/shared/mlruns); "" = off
    mlflow_experiment: str = "fusionrs"  # MLflow experiment (created when missing); the run is named run.name
    wandb_project: str = ""  # W&B project; "" = off. The API key comes from WANDB_API_KEY on the nodes, never a config
    wandb_mode: str = ""  # online | offline (files only, `wandb sync` later); "" = W&B's own (WANDB_MODE)

    def validate(self, where: str) -> None:
        choice(f"{where}.wandb_mode", self.wandb_mode, ("", "online", "offline"))


@dataclass(kw_only=True)
class TrainConfig:
    """What every training run has: the data (a build's output), the run, the loader, the
    optimiser and the parallelism. A model family adds its own sections."""

    data: str = ""  # the build's output URI (its triplets/ are read)
    run: RunConfig = field(default_factory=RunConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> None:
        if not self.data:
            raise ConfigError("data: the build output URI is required")

    def resolve(self) -> None:
        """Workers run elsewhere: the driver's relative local paths become absolute, once."""
        if "://" not in self.run.storage_path:
            self.run.storage_path = os.path.abspath(self.run.storage_path)
        for obj, key in self.path_fields():  # only paths that exist here: others are tags or hub ids
            v = getattr(obj, key)
            if v and "://" not in v and not os.path.isabs(v) and os.path.exists(v):
                setattr(obj, key, os.path.abspath(v))

    def path_fields(self) -> list[tuple[object, str]]:
        return [(self, "data")]


@dataclass(kw_only=True)
class ClipTrainConfig(TrainConfig):
    """Tri-modal CLIP (RGB, IR, text) on open_clip."""

    model: ClipModelConfig = field(default_factory=ClipModelConfig)
    setting: str = "580k-only"  # 580k-only | A-original | B-iraware | C-mixed
    rgb_ir_weight: float = 1.0  # w in (L_rt + L_it + w·L_ri)/(2+w)
    batch_size: int = 128  # per worker; negatives are global (all workers' batches)
    eval_batch_size: int = 256  # rows per embedding call in validation
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-6, weight_decay=0.1, warmup_steps=500, epochs=3))

    def validate(self) -> None:
        super().validate()
        choice("setting", self.setting, CLIP_SETTINGS)
        positive("train", batch_size=self.batch_size, eval_batch_size=self.eval_batch_size)
        if self.optim.grad_accum != 1:
            raise ConfigError("optim.grad_accum: CLIP trains on global in-batch negatives; use a larger batch_size")

    def path_fields(self):
        return super().path_fields() + [(self.model, "config_json"), (self.model, "pretrained")]


@dataclass(kw_only=True)
class VlmTrainConfig(TrainConfig):
    """LoRA instruction tuning of a VLM (Qwen2.5-VL, LLaVA, InstructBLIP)."""

    model: VlmModelConfig = field(default_factory=VlmModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    setting: str = "B-iraware"  # A-original | B-iraware | C-mixed
    tasks: list[str] = field(default_factory=lambda: list(VLM_TASKS))  # caption, scene, object, ir_cue
    inputs: str = "ir"  # ir | rgb+ir: two images per turn (Qwen2.5-VL, LLaVA-NeXT) or side by side (docs/vlm.md)
    micro_batch_size: int = 1  # per worker and micro-step
    packing: bool = False  # a micro-step's examples as one padding-free row (Qwen2.5-VL; docs/vlm-packing.md)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-4, warmup_ratio=0.03, grad_accum=8))
    parallel: ParallelConfig = field(default_factory=lambda: ParallelConfig(bf16=True))

    def validate(self) -> None:
        super().validate()
        choice("setting", self.setting, VLM_SETTINGS)
        choice("inputs", self.inputs, VLM_INPUTS)
        if not self.tasks:
            raise ConfigError("tasks: at least one task is required")
        for t in self.tasks:
            choice("tasks[]", t, VLM_TASKS)
        positive("train", micro_batch_size=self.micro_batch_size)
        if self.parallel.compile:
            raise ConfigError("parallel.compile: CLIP only for now (a VLM's varying sequence lengths recompile)")
        if self.packing and self.model.attn_implementation == "flash_attention_2":
            raise ConfigError("packing: checked with sdpa and eager only; flash_attention_2 on packed rows is untested")
        if self.parallel.strategy == "deepspeed" and self.parallel.zero_stage not in (2, 3):
            raise ConfigError("parallel.zero_stage: 2 or 3 for LoRA tuning (0/1 gain nothing over ddp)")

    def path_fields(self):
        return super().path_fields() + [(self.model, "path")]
