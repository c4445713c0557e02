"""Per-image validation of translator output: a failed translation is a reason-coded reject."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from fusionrs.dataset.schema import IR_OK

IR_DECODE_FAILED = "ir_decode_failed"
IR_WRONG_MODE = "ir_wrong_mode"
IR_WRONG_SIZE = "ir_wrong_size"
IR_BLANK = "ir_blank"
IR_NONFINITE = "ir_nonfinite"


def validate_ir_jpeg(data: bytes | None, size: int | tuple[int, int], min_std: float = 1.0) -> str:
    """'ok' or the reason the translated image is unusable; `size` is (w, h) or a square side."""
    expected = (size, size) if isinstance(size, int) else tuple(size)
    if not data:
        return IR_DECODE_FAILED
    try:
        img = Image.open(io.BytesIO(data), formats=("JPEG",))
        img.load()
    except Exception:
        return IR_DECODE_FAILED
    if img.mode != "RGB":
        return IR_WRONG_MODE
    if img.size != expected:
        return IR_WRONG_SIZE
    if float(np.asarray(img)[::4, ::4].std()) < min_std:  # strided: a blank image is blank everywhere
        return IR_BLANK  # a constant image is a failed translation, never a valid IR frame
    return IR_OK
