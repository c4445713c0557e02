"""Tri-modal CLIP (RGB, IR, text) on open_clip backbones: model, loss, data, trainer step."""
