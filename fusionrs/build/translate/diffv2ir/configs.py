"""LDM (CompVis) configs: the real DiffV2IR architecture and the tiny debug model.

Both are in `configs/generate.yaml` form, which diffusers' LDM converters read. The
`fusionrs_text_encoder` key is ours: the LDM config names its CLIP by path only.
"""

from __future__ import annotations

import copy

VIT_L14_TEXT = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                "projection_dim": 768}

DIFFV2IR_GENERATE = {
    "model": {
        "target": "ldm.models.diffusion.ddpm_DiffV2IR.LatentDiffusion",
        "params": {
            "linear_start": 0.00085, "linear_end": 0.0120, "num_timesteps_cond": 1, "log_every_t": 200,
            "timesteps": 1000, "first_stage_key": "edited", "cond_stage_key": "edit", "image_size": 32,
            "channels": 4, "cond_stage_trainable": False, "conditioning_key": "hybrid", "monitor": "val/loss_simple_ema",
            "scale_factor": 0.18215, "use_ema": True, "load_ema": True,
            "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": {
                "image_size": 32, "in_channels": 12, "out_channels": 4, "model_channels": 320,
                "attention_resolutions": [4, 2, 1], "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4],
                "num_heads": 8, "use_spatial_transformer": True, "transformer_depth": 1, "context_dim": 768,
                "use_checkpoint": True, "legacy": False}},
            "first_stage_config": {"target": "ldm.models.autoencoder.AutoencoderKL", "params": {
                "embed_dim": 4, "monitor": "val/rec_loss",
                "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
                             "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [],
                             "dropout": 0.0},
                "lossconfig": {"target": "torch.nn.Identity"}}},
            "cond_stage_config": {"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder"},
            "fusionrs_text_encoder": VIT_L14_TEXT,
        },
    }
}


def tiny_generate_config() -> dict:
    """Same layout (4 levels, 2 res blocks, cross-attention at 3 levels), tiny widths."""
    cfg = copy.deepcopy(DIFFV2IR_GENERATE)
    p = cfg["model"]["params"]
    p["unet_config"]["params"].update(model_channels=32, channel_mult=[1, 1, 2, 2], context_dim=32, num_heads=4)
    p["first_stage_config"]["params"]["ddconfig"].update(ch=32, ch_mult=[1, 1, 1, 1])
    p["fusionrs_text_encoder"] = {**VIT_L14_TEXT, "hidden_size": 32, "intermediate_size": 64,
                                  "num_hidden_layers": 2, "num_attention_heads": 4, "projection_dim": 32}
    return cfg
