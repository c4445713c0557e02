"""DiffV2IR inference on diffusers components, batched (docs: ../shared/reference/diffv2ir-inference.md).

What upstream does, and what we keep exactly:
- geometry: longest side to `resolution`, short side rounded *up* to a multiple of 64, both
  sides floored to multiples of 64, `ImageOps.fit` (LANCZOS, centred);
- conditioning latents: VAE posterior *mode*, no 0.18215 scaling; unconditional image and
  segmentation latents are zeros; unconditional text is the "" embedding;
- 12-channel UNet input: [x·c_in, image latent, segmentation latent];
- k-diffusion CompVisDenoiser: σ from the scaled-linear schedule, schedule interpolated in log σ,
  continuous (fractional) timesteps, D = x − σ·ε;
- guidance D = D₃ + s_T(D₀−D₁) + s_I(D₁−D₂) + s_S(D₂−D₃) over the four branches
  (full, no text, seg only, none);
- Euler ancestral, η = 1; decode z/0.18215, clamp, ×255, truncate to uint8, 3-channel RGB.

What we change: B images per step (one UNet call of 4·B rows, or branch chunks), and noise
from a per-sample generator seeded by (seed, sample_id), so a sample's output does not depend
on its batch, on retries or on reruns (upstream reseeds every image with one global seed).
The sampler state is kept in fp32; the networks run in the configured dtype.

Speed levers (`Levers`, docs/translate.md "Speed levers"): torch.compile of the UNet (CUDA
graphs with reduce-overhead / max-autotune), channels-last, the attention kernel, FP8 linears.
The first three compute the same function (outputs differ by rounding only); FP8 changes the
model's numbers and is the only one in the translate stage's identity.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from fusionrs.config.build import TranslateConfig

SCALE_FACTOR = 0.18215
PROMPT_TEMPLATE = "turn the visible image of {caption} into infrared"


def upstream_size(w: int, h: int, resolution: int) -> tuple[int, int]:
    """DiffV2IR infer.py's output size for an input of w×h."""
    f = resolution / max(w, h)
    f = math.ceil(min(w, h) * f / 64) * 64 / min(w, h)
    return int(math.floor(w * f / 64) * 64), int(math.floor(h * f / 64) * 64)


def fit(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    return ImageOps.fit(img.convert("RGB"), size, method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def sample_seed(seed: int, sample_id: str) -> int:
    return int(hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest()[:15], 16)


# ---------------------------------------------------------------------------------------
# k-diffusion's CompVisDenoiser schedule, computed exactly.


class KarrasSchedule:
    def __init__(self, linear_start=0.00085, linear_end=0.012, timesteps=1000):
        betas = np.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=np.float64) ** 2
        alphas_cumprod = torch.tensor(np.cumprod(1.0 - betas, axis=0), dtype=torch.float32)  # LDM's float32 buffer
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    def get_sigmas(self, n: int) -> torch.Tensor:
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return torch.cat([self.t_to_sigma(t), t.new_zeros([1])])

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = sigma.log()
        log_sigmas = self.log_sigmas.to(sigma.device)  # the table is built on the CPU; σ lives on the GPU
        dists = log_sigma - log_sigmas[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = log_sigmas[low_idx], log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return ((1 - w) * low_idx + w * high_idx).view(sigma.shape)


def guide(d: torch.Tensor, b: int, s_text: float, s_image: float, s_seg: float) -> torch.Tensor:
    """Combine the four branches (rows [full | no text | seg only | none], b rows each)."""
    d0, d1, d2, d3 = d[:b], d[b:2 * b], d[2 * b:3 * b], d[3 * b:]
    return d3 + s_text * (d0 - d1) + s_image * (d1 - d2) + s_seg * (d2 - d3)


@dataclass
class SamplingConfig:
    steps: int = 20
    cfg_text: float = 7.5
    cfg_image: float = 1.5
    cfg_seg: float = 1.5
    branch_chunks: int = 1  # split the 4·B rows into this many UNet calls when memory is short


@dataclass(frozen=True)
class Levers:
    """How the UNet runs; the choices are TranslateConfig's (config/build.py)."""

    compile: str = "off"  # a torch.compile mode, or off
    channels_last: bool = False
    attention: str = "sdpa"
    fp8: bool = False

    def uses_cuda_graphs(self) -> bool:
        return self.compile in TranslateConfig.CUDA_GRAPH_MODES


class Fp8Unavailable(RuntimeError):
    """translate.fp8 asked for where it cannot run: the message says what is missing."""


def require_fp8(device: torch.device) -> None:
    """FP8 GEMMs need an NVIDIA GPU of compute capability 8.9+ (Ada, Hopper) and torchao."""
    missing = []
    if device.type != "cuda":
        missing.append("this process has no CUDA GPU" if not torch.cuda.is_available() else f"the model runs on {device}")
    elif torch.cuda.get_device_capability(device) < (8, 9):
        missing.append(f"{torch.cuda.get_device_name(device)} has compute capability "
                       f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))}")
    try:
        import torchao  # noqa: F401 - optional dependency, only for translate.fp8
    except ImportError:
        missing.append("torchao is not installed (pip install torchao)")
    if missing:
        raise Fp8Unavailable("translate.fp8=true needs an FP8-capable CUDA GPU (compute capability 8.9 or newer: "
                             "L4, L40S, H100, H200) and torchao; " + "; ".join(missing) + ". Set translate.fp8=false, "
                             "or run the translate actors on such GPUs (translate.num_gpus=1).")


def fp8_target(module: torch.nn.Module, fqn: str) -> bool:
    """The linear layers of the UNet's transformer blocks (attention projections and
    feed-forward), where its non-convolution FLOPs are; FP8 GEMMs need dimensions in multiples
    of 16. Convolutions, the time embedding and the resnets' time projections stay in `dtype`."""
    return (isinstance(module, torch.nn.Linear) and ".transformer_blocks." in f".{fqn}."
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def quantize_fp8(unet: torch.nn.Module) -> int:
    """E4M3 weights and dynamically scaled E4M3 activations, one scale per row (torchao's
    float8 inference path); returns how many linear layers were converted."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_  # optional dependency

    n = sum(fp8_target(m, name) for name, m in unet.named_modules())
    quantize_(unet, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=fp8_target)
    return n


class DiffV2IRPipeline:
    def __init__(self, unet, vae, text_encoder, tokenizer, device="cpu", dtype=torch.float32):
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.device, self.dtype = torch.device(device), dtype
        for m in (unet, vae, text_encoder):
            m.to(self.device, dtype=dtype).eval().requires_grad_(False)
        self.schedule = KarrasSchedule()
        self._null: torch.Tensor | None = None
        self.levers = Levers()
        self.pad_to = 0  # with a compiled UNet: every call is padded to this many images (one shape per image size)

    @classmethod
    def from_pretrained(cls, path: str | Path, device="cpu", dtype=torch.float32) -> "DiffV2IRPipeline":
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        p = Path(path)
        return cls(UNet2DConditionModel.from_pretrained(p / "unet"), AutoencoderKL.from_pretrained(p / "vae"),
                   CLIPTextModel.from_pretrained(p / "text_encoder"), CLIPTokenizer.from_pretrained(p / "tokenizer"),
                   device=device, dtype=dtype)

    # -- speed levers -------------------------------------------------------------------------
    def set_attention(self, kind: str) -> None:
        """The attention kernel of the UNet and the VAE, explicitly. `sdpa`: torch's
        scaled_dot_product_attention (flash / memory-efficient kernels on GPU; what diffusers
        picks by default on torch 2). `math`: the plain baddbmm-softmax-bmm path."""
        # diffusers loads lazily here, as in from_pretrained: the build's driver imports this module without it.
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        processor = {"sdpa": AttnProcessor2_0, "math": AttnProcessor}[kind]
        for m in (self.unet, self.vae):
            m.set_attn_processor(processor())

    def apply_levers(self, levers: Levers, batch_size: int, compile_backend: str = "inductor") -> None:
        """Once, after loading, before the first batch. The order matters: memory format and FP8
        weights are what torch.compile then traces. A compiled UNet is compiled for fixed shapes
        (dynamic=False) and every call is padded to `batch_size` images, so it compiles (and, with
        CUDA graphs, records) once per image size instead of once per batch size seen."""
        if levers.fp8:
            require_fp8(self.device)
        self.set_attention(levers.attention)
        if levers.channels_last:
            self.unet.to(memory_format=torch.channels_last)
        if levers.fp8:
            quantize_fp8(self.unet)
        if levers.compile != "off":
            mode = None if levers.compile == "default" else levers.compile
            self.unet = torch.compile(self.unet, mode=mode, dynamic=False, backend=compile_backend)
        self.pad_to = batch_size if levers.compile != "off" else 0
        self.levers = levers

    # -- conditioning ------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        return self.text_encoder(ids)[0]  # last_hidden_state, no attention mask (as upstream)

    def null_text(self) -> torch.Tensor:
        if self._null is None:
            self._null = self.encode_text([""])
        return self._null

    @torch.no_grad()
    def encode_image(self, imgs: list[Image.Image]) -> torch.Tensor:
        x = torch.stack([torch.from_numpy(np.asarray(i.convert("RGB"), dtype=np.float32)).permute(2, 0, 1) for i in imgs])
        x = (2 * x / 255 - 1).to(self.device, self.dtype)
        return self.vae.encode(x).latent_dist.mode()  # posterior mean, no scaling factor

    # -- the model: k-diffusion denoiser with four-branch guidance --------------------------------
    def denoise(self, x, sigma, img_lat, seg_lat, cond, null, sc: SamplingConfig) -> torch.Tensor:
        b = x.shape[0]
        zeros = torch.zeros_like(img_lat)
        x_in = torch.cat([x] * 4)
        s_in = sigma.expand(4 * b)
        c_in = (1.0 / (s_in ** 2 + 1) ** 0.5).view(-1, 1, 1, 1)
        t = self.schedule.sigma_to_t(s_in)
        image = torch.cat([img_lat, img_lat, zeros, zeros])
        seg = torch.cat([seg_lat, seg_lat, seg_lat, zeros])
        ctx = torch.cat([cond, null.expand(b, -1, -1), null.expand(b, -1, -1), null.expand(b, -1, -1)])
        unet_in = torch.cat([(x_in * c_in).to(self.dtype), image.to(self.dtype), seg.to(self.dtype)], dim=1)
        eps = []
        for rows in torch.tensor_split(torch.arange(4 * b), min(sc.branch_chunks, 4 * b)):
            if self.levers.uses_cuda_graphs():
                torch.compiler.cudagraph_mark_step_begin()  # each call is a new step: replays may reuse output memory
            out = self.unet(unet_in[rows], t[rows].to(self.device), encoder_hidden_states=ctx[rows]).sample
            eps.append(out.to(torch.float32, copy=True))  # a copy: a CUDA graph's next replay overwrites its output
        d = x_in - s_in.view(-1, 1, 1, 1) * torch.cat(eps)
        return guide(d, b, sc.cfg_text, sc.cfg_image, sc.cfg_seg)

    # -- sampling ------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, images: list[Image.Image], prompts: list[str], seeds: list[int], seg_maps: list[Image.Image],
                 sc: SamplingConfig) -> list[Image.Image]:
        """Images of one size in, infrared-style images of that size out (PIL RGB)."""
        sizes = {i.size for i in images}
        if len(sizes) != 1:
            raise ValueError(f"one size per batch, got {sizes}")
        n = len(images)
        if n < self.pad_to:  # repeats of the last sample (same seed, same noise); their outputs are dropped
            k = self.pad_to - n
            images, prompts, seeds, seg_maps = (list(v) + [v[-1]] * k for v in (images, prompts, seeds, seg_maps))
        img_lat = self.encode_image(images).float()
        seg_lat = self.encode_image(seg_maps).float()
        cond = self.encode_text(prompts)
        null = self.null_text()
        sigmas = self.schedule.get_sigmas(sc.steps).to(self.device)
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        shape = img_lat.shape[1:]

        def noise():  # per sample, on CPU: the same numbers on every device and in every batch
            return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(self.device)

        x = noise() * sigmas[0]
        for i in range(len(sigmas) - 1):
            s, s_next = sigmas[i], sigmas[i + 1]
            d = self.denoise(x, s, img_lat, seg_lat, cond, null, sc)
            s_up = torch.minimum(s_next, (s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2) ** 0.5)
            s_down = (s_next ** 2 - s_up ** 2) ** 0.5
            x = x + (x - d) / s * (s_down - s)
            if s_next > 0:
                x = x + noise() * s_up
        return self.decode(x)[:n]

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> list[Image.Image | None]:
        """None for a sample whose latent or decoded pixels are not finite (a failed sample)."""
        x = self.vae.decode((z / SCALE_FACTOR).to(self.dtype)).sample.float()
        finite = torch.isfinite(z.flatten(1)).all(1) & torch.isfinite(x.flatten(1)).all(1)
        x = (((x + 1) / 2).clamp(0, 1) * 255).to(torch.uint8)  # truncation, as upstream
        return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy(), "RGB") if ok else None for a, ok in zip(x, finite.tolist())]
