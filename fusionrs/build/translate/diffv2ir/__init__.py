"""DiffV2IR (RGB → infrared-style) re-implemented on diffusers components, batched.

- `pipeline.DiffV2IRPipeline`: the exact upstream inference algorithm (k-diffusion σ schedule,
  four-branch guidance, Euler ancestral), B images per UNet call of 4·B rows.
- `convert.convert_checkpoint`: LDM/Lightning checkpoint → diffusers folder (safetensors).
- `tiny.write_tiny_checkpoint`: a tiny random DiffV2IR in the LDM on-disk format (debug model).
- `translator.DiffV2IRTranslator`: the build's translate stage.
"""
