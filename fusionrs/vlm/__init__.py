"""VLM instruction tuning: instruction data, chat encoding, LoRA models, Ray Train trainer."""
