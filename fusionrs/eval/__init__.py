"""The evaluation floor: retrieval and zero-shot (CLIP), generative metrics (VLM), reports.
Reads the dataset through train/*/data, never a training loop."""
