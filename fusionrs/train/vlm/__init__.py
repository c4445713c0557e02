"""VLM LoRA instruction tuning: instruction data, chat encoding, LoRA, trainer step."""
