"""Digit images as the models saw their training data.

The 28x28 path follows how MNIST itself was made: grayscale, light ink on a dark ground, cropped to the
ink, scaled to fit 20x20 keeping the aspect ratio, and placed in 28x28 with its centre of mass at the
centre. The 8x8 path follows scikit-learn's digits (UCI): the ink scaled to fill a 32x32 box, then 4x4
blocks averaged into 8x8 cells of 0-16.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.http.errors import InvalidInput, PayloadTooLarge

MAX_PIXELS = 40_000_000  # refuse decompression bombs before decoding them


def pixel_count(data: bytes) -> int:
    """Width x height from the file's header, without decoding it; 0 when it is not a readable image (the
    decoding says why)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width * image.height
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        return 0


def check_pixels(files: list[tuple[str, bytes]], limit: int) -> None:
    """Refuse a request whose images decode past ``limit`` pixels together (413), from their headers alone: a
    300 KB PNG can decode to 40 million pixels, and decoding is where the time and memory go."""
    total = 0
    for name, data in files:
        total += pixel_count(data)
        if total > limit:
            raise PayloadTooLarge(f"{name}: the images up to this one decode to {total:,} pixels, past the "
                                  f"{limit:,}-pixel limit of one request (TRAINSERVE_MAX_REQUEST_PIXELS); send smaller images, or "
                                  "fewer per call")


def decode(data: bytes, filename: str) -> np.ndarray:
    """Grayscale in [0, 1], ink bright: transparent parts count as paper, dark-on-light is inverted."""
    if not data:
        raise InvalidInput(f"{filename}: the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise InvalidInput(f"{filename}: {image.width}x{image.height} pixels is too large; send at most "
                               f"{MAX_PIXELS:,} pixels")
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"{filename}: not a readable PNG or JPEG image ({type(exc).__name__})")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        paper.alpha_composite(rgba)
        image = paper
    gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:  # dark ink on light paper: make the ink the bright part
        gray, border = 1.0 - gray, 1.0 - border
    return np.clip(gray - float(np.median(border)), 0.0, 1.0)  # the paper's own tone is not ink


def _ink_box(gray: np.ndarray, filename: str) -> np.ndarray:
    peak = float(gray.max())
    if peak < 0.15:
        raise InvalidInput(f"{filename}: found no ink; send a digit drawn darker or lighter than its background")
    rows, cols = np.nonzero(gray > 0.1 * peak)
    box = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return np.clip(box / peak, 0.0, 1.0)


def _fit(box: np.ndarray, size: int) -> np.ndarray:
    h, w = box.shape
    scale = size / max(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = Image.fromarray((box * 255).astype(np.uint8)).resize(new, Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.float32) / 255.0


def to_mnist(gray: np.ndarray, filename: str) -> np.ndarray:
    """28x28 in [0, 1]: the ink fitted to 20x20, its centre of mass at the centre."""
    digit = _fit(_ink_box(gray, filename), 20)
    mass = digit.sum()
    rows, cols = np.indices(digit.shape)
    cy, cx = (rows * digit).sum() / mass, (cols * digit).sum() / mass
    top = int(np.clip(round(14 - cy), 0, 28 - digit.shape[0]))
    left = int(np.clip(round(14 - cx), 0, 28 - digit.shape[1]))
    canvas = np.zeros((28, 28), dtype=np.float32)
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return canvas


def to_uci_digits(gray: np.ndarray, filename: str) -> np.ndarray:
    """8x8 in [0, 1]: the ink fitted to a 32x32 box, then 4x4 blocks averaged."""
    digit = _fit(_ink_box(gray, filename), 32)
    canvas = np.zeros((32, 32), dtype=np.float32)
    top, left = (32 - digit.shape[0]) // 2, (32 - digit.shape[1]) // 2
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return canvas.reshape(8, 4, 8, 4).mean(axis=(1, 3))


def preprocess(data: bytes, filename: str, input_shape: tuple[int, ...], value_range: tuple[float, float]) -> np.ndarray:
    """One image as one instance of a model's input, on the model's value scale."""
    height, width = input_shape[-2:]
    gray = decode(data, filename)
    if (height, width) == (28, 28):
        image = to_mnist(gray, filename)
    elif (height, width) == (8, 8):
        image = to_uci_digits(gray, filename)
    else:
        raise InvalidInput(f"this model takes {height}x{width} inputs; images are supported for 28x28 and 8x8 "
                           "models, send pixel arrays instead")
    low, high = value_range
    return (low + image * (high - low)).reshape(input_shape).astype(np.float32)
