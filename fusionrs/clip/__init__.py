"""Tri-modal CLIP (RGB, IR, text) on open_clip backbones: model loading, loss, data, training."""
