"""Reading an image file as the 8-bit RGB a model takes: 8-bit RGB, RGBA (alpha dropped), greyscale
(repeated into three channels) and palette images as they are (Pillow reads a 16-bit RGB PNG as
8-bit RGB itself); 16-bit greyscale scaled by 1/257 to 8 bits, not clipped (Pillow's own
conversion saturates such a file to white). What would
give a confident but wrong depth map is refused or warned about, with the reason."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

# Pillow's names for one-channel integer images wider than 8 bits.
WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
ASPECT_TOLERANCE = 0.25  # a relative difference of width/height beyond which the frame is distorted


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """The image at ``path`` as HxWx3 uint8."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"image {path} could not be read as an image: {exc}") from None
    if image.mode in WIDE_GREY_MODES:
        values = np.asarray(image).astype(np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise ValueError(
                f"image {path} holds {image.mode} values in {values.min()}..{values.max()}; expected 0..65535"
            )
        grey = (values / 257.0 + 0.5).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "F":
        raise ValueError(
            f"image {path} holds floating-point values (mode F), not a photograph; "
            "expected 8- or 16-bit RGB or greyscale"
        )
    return np.asarray(image.convert("RGB"))


def check_against_input(rgb: np.ndarray, input_size: tuple[int, int], source: str) -> None:
    """Warn when an image is smaller than the model's input (it will be upsampled, blurring what
    the model sees) or far from its aspect ratio (it will be stretched, and depth cues with it)."""
    height, width = rgb.shape[:2]
    want_h, want_w = input_size
    if height < want_h or width < want_w:
        logger.warning(
            "%s is %dx%d, smaller than the model's %dx%d input: it is upsampled, and the depth map is coarser "
            "than it looks",
            source,
            width,
            height,
            want_w,
            want_h,
        )
    aspect, wanted = width / height, want_w / want_h
    if abs(aspect / wanted - 1) > ASPECT_TOLERANCE:
        logger.warning(
            "%s has aspect ratio %.2f (width/height), the model %.2f (NYU's 4:3 frames): it is stretched to fit, "
            "which distorts the depth cues; crop it to about 4:3 first",
            source,
            aspect,
            wanted,
        )
