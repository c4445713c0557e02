"""The training floor: one Ray trainer (trainer.py) and a step per model family (clip/, vlm/)."""
