"""The build config: sources, then one section per stage (docs/pipeline.md).

Filled from YAML and `key=value` overrides by config.loader; the resolved config and its
fingerprint are written beside every build's outputs.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

from fusionrs.config.loader import ConfigError, choice, in_range, positive, stable_hash

SOURCE_FORMATS = ("rs5m_wds", "skyscript_csv", "nwpu", "karpathy_json")
SPLITS = ("train", "val", "test")


@dataclass(kw_only=True)
class SourceConfig:
    """One input collection. `root` is a URI (local path or s3://bucket/prefix)."""

    name: str  # free text, e.g. RSICD, Sydney; also the prefix of sample_ids
    format: str  # one of SOURCE_FORMATS
    root: str
    annotations: str = ""  # karpathy_json / nwpu: the JSON file; skyscript_csv: the CSV
    shards: str = "*.tar"  # rs5m_wds: glob of tar files under root
    images_dir: str = ""  # nwpu: folder of class folders under root ("" = root itself)

    def validate(self, where: str) -> None:
        if self.format not in SOURCE_FORMATS:
            raise ConfigError(f"{where}.format: {self.format!r} is not one of {', '.join(SOURCE_FORMATS)}")
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ConfigError(f"{where}.name: {self.name!r} must be non-empty letters, digits, '-' or '_'")
        if self.format in ("karpathy_json", "nwpu", "skyscript_csv") and not self.annotations:
            raise ConfigError(f"{where}.annotations: required for format {self.format}")


@dataclass(kw_only=True)
class StorageConfig:
    """Where S3 is (credentials come from the standard AWS chain, never from here)."""

    s3_endpoint: str = ""  # empty: AWS_ENDPOINT_URL from the environment, else AWS itself
    s3_region: str = "us-east-1"  # region of the S3 endpoint
@dataclass(kw_only=True)
class IngestConfig:
    """Reading and validating source records (docs/security.md)."""

    records_per_unit: int = 256  # the shard: unit of work, of retry and of output files
    max_pixels: int = 40_000_000  # larger images are rejected before decoding (bombs)
    min_side: int = 32  # images with a shorter side than this are rejects (too_small)
    max_side: int = 1024  # stored RGB is downscaled to this longest side
    jpeg_quality: int = 95  # quality of re-encoded RGB JPEGs (source JPEGs that need no change are kept byte for byte)
    grayscale: str = "reject"  # reject | convert: a grayscale source is not an RGB image
    max_transparent_fraction: float = 0.01  # PNG alpha: more transparency than this is a reject
    max_file_bytes: int = 64 << 20  # a source file (or tar member) larger than this is a reject, never read
    read_timeout_s: float = 120.0  # a source file not read within this is a reject (0 = no deadline)

    def validate(self, where: str) -> None:
        positive(where, records_per_unit=self.records_per_unit, max_pixels=self.max_pixels,
                 min_side=self.min_side, max_side=self.max_side, max_file_bytes=self.max_file_bytes)
        in_range(f"{where}.read_timeout_s", self.read_timeout_s, 0, 86400)
        choice(f"{where}.grayscale", self.grayscale, ("reject", "convert"))
        in_range(f"{where}.jpeg_quality", self.jpeg_quality, 50, 100)
        in_range(f"{where}.max_transparent_fraction", self.max_transparent_fraction, 0.0, 1.0)


@dataclass(kw_only=True)
class CleanConfig:
    """Original-caption cleaning (docs/cleaning.md)."""

    min_words: int = 4  # a caption sentence needs at least this many words
    max_words: int = 60  # a caption sentence may have at most this many words
    min_content_words: int = 1  # nouns from the scene/object lexicon
    rs5m_min_words: int = 6  # RS5M captions are web alt-text: demand more
    language_min_prob: float = 0.9  # langid confidence needed to call a caption non-English
    fallback_template: str = "an aerial image of a {class_name}"

    def validate(self, where: str) -> None:
        positive(where, min_words=self.min_words, max_words=self.max_words)
        if self.min_words > self.max_words:
            raise ConfigError(f"{where}.min_words ({self.min_words}) exceeds {where}.max_words ({self.max_words})")
        if "{class_name}" not in self.fallback_template:
            raise ConfigError(f"{where}.fallback_template must contain {{class_name}}")


@dataclass(kw_only=True)
class DedupConfig:
    """Joint groups: which duplicates are one group."""

    near_radius: int = 4  # pHash64 Hamming distance, inclusive
    caption_groups: bool = True  # union samples whose normalized captions are equal

    def validate(self, where: str) -> None:
        in_range(f"{where}.near_radius", self.near_radius, 0, 12)


@dataclass(kw_only=True)
class SplitConfig:
    """Per-source targets as counts (`counts: {RS5M: {train: .., val: .., test: ..}}`) or fractions."""

    seed: int = 0  # orders candidate groups: a different seed, a different (equally valid) split
    fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.9, "val": 0.05, "test": 0.05})
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per-source targets {SOURCE: {train, val, test}} (paper Table 2); empty: fractions
    scale_counts: bool = True  # counts that differ from a source's usable (translated) rows are scaled pro rata
    min_heldout_per_source: int = 1  # val and test rows each source must get (where it has 3× as many rows)
    allow_short: bool = False  # with counts: a held-out split that misses its exact target is a warning, not an error

    def validate(self, where: str) -> None:
        if set(self.fractions) != set(SPLITS):
            raise ConfigError(f"{where}.fractions must have exactly the keys {SPLITS}, got {sorted(self.fractions)}")
        if any(v < 0 for v in self.fractions.values()) or abs(sum(self.fractions.values()) - 1) > 1e-6:
            raise ConfigError(f"{where}.fractions must be non-negative and sum to 1, got {self.fractions}")
        for src, c in self.counts.items():
            if set(c) != set(SPLITS) or any((not isinstance(v, int)) or v < 0 for v in c.values()):
                raise ConfigError(f"{where}.counts.{src} must map {SPLITS} to non-negative integers, got {c}")
        in_range(f"{where}.min_heldout_per_source", self.min_heldout_per_source, 0, 10**9)


@dataclass(kw_only=True)
class SubsetConfig:
    """Which samples get IR-aware captions: per-source counts (paper Table 3) or per-split fractions."""

    seed: int = 0  # orders the rows the subset is drawn from
    fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.1, "val": 0.1, "test": 1.0})
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per-source IR-aware caption counts {SOURCE: {train, val, test}} (paper Table 3); empty: fractions
    def validate(self, where: str) -> None:
        if set(self.fractions) != set(SPLITS) or any(not 0 <= v <= 1 for v in self.fractions.values()):
            raise ConfigError(f"{where}.fractions must map {SPLITS} to values in [0, 1], got {self.fractions}")
        for src, c in self.counts.items():
            if set(c) != set(SPLITS):
                raise ConfigError(f"{where}.counts.{src} must have exactly the keys {SPLITS}")


@dataclass(kw_only=True)
class TranslateConfig:
    """RGB → infrared-style translation (docs/translate.md)."""

    backend: str = "pseudo_ir"  # pseudo_ir (CPU, deterministic) | diffv2ir (GPU; the paper's translator)
    resolution: int = 512  # IR images are this many pixels square (DiffV2IR: the longest side)
    jpeg_quality: int = 95  # quality of the stored IR JPEGs
    batch_size: int = 16  # images per UNet call (4x rows per step)
    seed: int = 1234  # with the sample_id, seeds each sample's noise
    num_cpus: float = 1.0  # CPUs per translate actor
    num_gpus: float = 0.0  # GPUs per translate actor (0: CPU)
    min_actors: int = 1  # the translate actor pool's smallest size
    max_actors: int = 1  # the translate actor pool's largest size (autoscaling adds GPU nodes up to it)
    # --- diffv2ir ----------------------------------------------------------------------------
    model: str = ""  # converted folder (fusionrs convert-diffv2ir), local or s3://; copied once per node
    model_sha256: str = ""  # if set, must equal the source checkpoint's SHA-256 recorded by the converter
    steps: int = 20  # sampler steps (Euler ancestral)
    cfg_text: float = 7.5  # guidance scale of the text branch
    cfg_image: float = 1.5  # guidance scale of the image branch
    cfg_seg: float = 1.5  # guidance scale of the segmentation branch
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    seg: str = "white"  # white | precomputed | sam  (docs/translate.md says why white is the default)
    seg_path: str = ""  # precomputed: URI template with {source} {sample_id} {source_record_id} {stem}
    sam_model: str = ""  # sam: a transformers SAM folder, local or s3:// (copied once per node)
    prompt: str = "turn the visible image of {caption} into infrared"
    prompt_caption: str = "caption"  # caption (the cleaned original) | blip (BLIP captions the RGB image, as upstream)
    blip_model: str = ""  # blip: a transformers BLIP captioning folder, local or s3://
    blip_max_new_tokens: int = 30  # length cap of BLIP prompt captions
    branch_chunks: int = 1  # >1 splits the 4 guidance branches over several UNet calls (less memory)
    # --- diffv2ir speed levers (docs/translate.md, "Speed levers") ----------------------------
    compile: bool | str = False  # torch.compile the UNet: off (false) | default (true) | reduce-overhead | max-autotune (the last two replay CUDA graphs); calls padded to batch_size
    channels_last: bool = False  # UNet in channels-last memory format (NHWC convolutions on GPU)
    attention: str = "sdpa"  # sdpa (torch's fused scaled_dot_product_attention, diffusers' default) | math (plain matmul-softmax)
    fp8: bool = False  # FP8 transformer-block linears in the UNet (torchao; GPU of compute capability >= 8.9); changes outputs, so it enters the translate fingerprint

    # The levers' choices (pipeline.Levers uses them too). Plain class attributes, not keys.
    COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
    CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
    ATTENTION = ("sdpa", "math")

    def compile_mode(self) -> str:
        """`compile` as a mode name: the key was true/false before it took modes (YAML reads off as false)."""
        if isinstance(self.compile, bool):
            return "default" if self.compile else "off"
        return self.compile

    def validate(self, where: str) -> None:
        choice(f"{where}.backend", self.backend, ("pseudo_ir", "diffv2ir"))
        in_range(f"{where}.resolution", self.resolution, 32, 4096)
        positive(where, batch_size=self.batch_size, min_actors=self.min_actors, max_actors=self.max_actors,
                  steps=self.steps, branch_chunks=self.branch_chunks)
        if self.min_actors > self.max_actors:
            raise ConfigError(f"{where}.min_actors ({self.min_actors}) exceeds {where}.max_actors ({self.max_actors})")
        choice(f"{where}.dtype", self.dtype, ("auto", "float32", "bfloat16", "float16"))
        choice(f"{where}.seg", self.seg, ("white", "precomputed", "sam"))
        if self.backend == "diffv2ir" and not self.model:
            raise ConfigError(f"{where}.model: required for backend diffv2ir (a folder from `fusionrs convert-diffv2ir`)")
        if self.seg == "precomputed" and not self.seg_path:
            raise ConfigError(f"{where}.seg_path: required for seg=precomputed")
        if self.seg == "sam" and not self.sam_model:
            raise ConfigError(f"{where}.sam_model: required for seg=sam")
        if "{caption}" not in self.prompt:
            raise ConfigError(f"{where}.prompt must contain {{caption}}")
        choice(f"{where}.prompt_caption", self.prompt_caption, ("caption", "blip"))
        if self.prompt_caption == "blip" and not self.blip_model:
            raise ConfigError(f"{where}.blip_model: required for prompt_caption=blip")
        choice(f"{where}.compile", self.compile_mode(), self.COMPILE_MODES)
        choice(f"{where}.attention", self.attention, self.ATTENTION)
        if self.fp8 and self.dtype not in ("auto", "bfloat16"):
            # torchao's per-row FP8 GEMM takes and returns bf16; auto is bf16 wherever FP8 can run (GPU).
            raise ConfigError(f"{where}.fp8: needs {where}.dtype auto or bfloat16, got {self.dtype}")


FUSIONRS_PROMPT = """You are annotating an infrared-style remote-sensing dataset.

You are given:
1. a generated infrared-style remote-sensing image,
2. the original scene-level caption.

Important note:
The infrared image is generated from RGB rather than captured by a physical thermal sensor. Describe visible infrared-style appearance and grayscale intensity patterns, but do not make physical claims about actual temperature, heat sources, or thermal emission.

Write one concise IR-aware caption for the generated infrared-style remote-sensing image.

Requirements:
- Preserve the scene semantics from the original caption.
- Add infrared-style visual cues, such as grayscale intensity, bright/dark intensity responses, low-texture regions, structural outlines, and contrast.
- Do not invent objects that are not visible or not implied by the original caption.
- Do not mention uncertainty.
- Do not describe the image as a natural RGB image.
- Use 1 to 2 sentences only.
- Output valid JSON only.

Original caption:
{original_caption}

Output JSON schema:
{
  "ir_aware_caption": "..."
}"""


@dataclass(kw_only=True)
class CaptionConfig:
    """IR-aware captions (docs/captioning.md)."""

    backend: str = "cues"  # cues (offline, measured IR cues) | openai (OpenAI-compatible API)
    num_cpus: float = 0.25  # captioners are light or I/O-bound
    min_actors: int = 1  # the caption actor pool's smallest size
    max_actors: int = 1  # the caption actor pool's largest size
    parts_per_call: int = 8  # parts captioned together by one actor call: more requests in flight
    # --- openai backend (OpenRouter, vLLM, any OpenAI-compatible server) -----------------
    base_url: str = "https://openrouter.ai/api/v1"  # the OpenAI-compatible endpoint (OpenRouter, vLLM, ...)
    model: str = "qwen/qwen2.5-vl-72b-instruct"  # the model route sent with every request
    api_key_env: str = "OPENROUTER_API_KEY"  # the key itself is read from the environment only
    temperature: float = 0.2  # sampling temperature (the official run: 0.2)
    max_tokens: int = 180  # answer length cap (the official run: 180)
    prompt: str = FUSIONRS_PROMPT  # {original_caption} is replaced verbatim (the braces are JSON)
    include_rgb: bool = False  # the paper sends RGB too; the official code sends only IR
    image_max_side: int = 512  # IR images are sent downscaled to this longest side
    concurrency: int = 32  # requests in flight per actor
    requests_per_minute: float = 600.0  # global, shared by all actors; 0 = unlimited
    tokens_per_minute: float = 0.0  # global; 0 = unlimited
    max_retries: int = 6  # retries of one request (429, 408, 5xx, timeouts, connection errors)
    timeout_s: float = 60.0  # per request
    budget_usd: float = 0.0  # 0 = no cap; else no new request once spent
    price_in_per_mtok: float = 0.0  # used when the API does not report usage.cost
    price_out_per_mtok: float = 0.0  # USD per million completion tokens, when the API reports no cost
    regenerate: int = 1  # re-requests of a caption the filter rejects
    cache: str = ""  # response cache URI; "" = OUTPUT/_cache/captions (share it across outputs to save more)

    def validate(self, where: str) -> None:
        choice(f"{where}.backend", self.backend, ("cues", "openai"))
        positive(where, min_actors=self.min_actors, max_actors=self.max_actors, max_tokens=self.max_tokens,
                  concurrency=self.concurrency, image_max_side=self.image_max_side, parts_per_call=self.parts_per_call)
        in_range(f"{where}.temperature", self.temperature, 0.0, 2.0)
        in_range(f"{where}.max_retries", self.max_retries, 0, 100)
        in_range(f"{where}.regenerate", self.regenerate, 0, 10)
        in_range(f"{where}.timeout_s", self.timeout_s, 0.1, 3600)
        for k in ("requests_per_minute", "tokens_per_minute", "budget_usd", "price_in_per_mtok", "price_out_per_mtok"):
            in_range(f"{where}.{k}", getattr(self, k), 0.0, 1e12)
        if "{original_caption}" not in self.prompt:
            raise ConfigError(f"{where}.prompt must contain {{original_caption}}")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.base_url must be an http(s) URL")


@dataclass(kw_only=True)
class IRFilterConfig:
    """The IR-aware caption filter (strict-v3 categories and the rules beside them)."""

    min_words: int = 8  # IR-aware captions shorter than this are filtered (too_short)
    max_words: int = 80  # IR-aware captions longer than this are filtered (too_long)
    min_cue_terms: int = 2  # distinct IR-cue lexicon terms needed
    max_overlap_without_cues: float = 0.8  # token Jaccard with the original caption

    def validate(self, where: str) -> None:
        positive(where, min_words=self.min_words, max_words=self.max_words)
        in_range(f"{where}.max_overlap_without_cues", self.max_overlap_without_cues, 0.0, 1.0)


@dataclass(kw_only=True)
class CostConfig:
    """Prices for the ledger and a GPU budget cap (the API cap is caption.budget_usd)."""

    gpu_hour_usd: float = 0.0  # one GPU-hour of the translate pool's node type (e.g. spot price / GPUs per node)
    cpu_hour_usd: float = 0.0  # one CPU-core-hour
    max_gpu_usd: float = 0.0  # 0 = no cap; past it, untranslated parts stay pending and the run stops cleanly

    def validate(self, where: str) -> None:
        for k in ("gpu_hour_usd", "cpu_hour_usd", "max_gpu_usd"):
            in_range(f"{where}.{k}", getattr(self, k), 0.0, 1e12)
        if self.max_gpu_usd and not self.gpu_hour_usd:
            raise ConfigError(f"{where}.max_gpu_usd needs {where}.gpu_hour_usd to price GPU time")


@dataclass(kw_only=True)
class RayConfig:
    """How the build runs on Ray."""

    address: str = ""  # empty: RAY_ADDRESS from the environment, else a local instance
    num_cpus: int = 0  # local instance only; 0 = all cores
    ingest_num_cpus: float = 1.0  # CPUs per ingest task
    write_num_cpus: float = 0.25  # the writer joins small tables; don't let it starve behind actor pools


@dataclass(kw_only=True)
class BuildConfig:
    output: str  # where the build writes: a local path or s3://bucket/prefix (never inside a source root)
    sources: list[SourceConfig]  # the input collections: [{name, format, root, annotations, ...}] (SourceConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    subset: SubsetConfig = field(default_factory=SubsetConfig)
    translate: TranslateConfig = field(default_factory=TranslateConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    ir_filter: IRFilterConfig = field(default_factory=IRFilterConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def validate(self) -> None:
        """Top-level rules; each section's own `validate(where)` runs first (config.loader)."""
        if not self.output:
            raise ConfigError("output: required (a local path or s3://bucket/prefix)")
        if not self.sources:
            raise ConfigError("sources: at least one source is required")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"sources: names must be unique, got {names}")
        for i, s in enumerate(self.sources):
            s.validate(f"sources[{i}]")
        unknown = set(self.split.counts) - set(names)
        if unknown:
            raise ConfigError(f"split.counts names sources not in sources: {sorted(unknown)}")
        for i, s in enumerate(self.sources):
            # The build deletes stale files under its output: it must never be able to touch inputs.
            if _overlaps(self.output, s.root):
                raise ConfigError(f"output: {self.output} is, contains or sits inside sources[{i}].root "
                                  f"({s.root}); write the build somewhere else")

    def resolve(self) -> None:
        """Relative local roots resolve against the working directory, once: the same source then
        has the same fingerprint however it was written (reruns skip what is done)."""
        if self.output and "://" not in self.output and not os.path.isabs(self.output):
            self.output = os.path.abspath(self.output)
        for src in self.sources:
            if "://" not in src.root and not os.path.isabs(src.root):
                src.root = os.path.abspath(src.root)
            if src.annotations:
                src.annotations = full_uri(src.root, src.annotations)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, *, exclude: tuple[str, ...] = ("output", "ray", "storage", "cost")) -> str:
        """Hash of what determines the outputs: where they go and how Ray runs do not count."""
        d = {k: v for k, v in self.to_dict().items() if k not in exclude}
        return stable_hash(d)




def _overlaps(a: str, b: str) -> bool:
    """Whether one URI is, contains or sits inside the other (local paths with symlinks resolved)."""
    def norm(u: str) -> str:
        if "://" in u and not u.startswith("file://"):
            scheme, _, path = u.partition("://")
            return f"{scheme}://{posixpath.normpath(path)}".rstrip("/")
        return os.path.realpath(u.removeprefix("file://"))

    x, y = norm(a), norm(b)
    return x == y or x.startswith(y + "/") or y.startswith(x + "/")


def full_uri(root: str, rel: str) -> str:
    """`rel` resolved against `root` (unless absolute), with `..` folded: one spelling per file."""
    if "://" in rel or rel.startswith("/"):
        uri = rel
    else:
        uri = root.rstrip("/") + "/" + rel
    scheme, sep, path = uri.partition("://")
    if not sep:
        return os.path.normpath(uri)
    return f"{scheme}://{posixpath.normpath(path)}"
