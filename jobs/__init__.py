r"""Thin entry points, one per Ray job (python -m jobs.NAME --config ...)."""
