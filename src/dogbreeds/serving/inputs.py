"""What a caller may send the model: encoded bytes, base64 text (also ``data:`` URIs) or pixel
arrays, in a DataFrame column or as they are; turned into one list of images to decode."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

IMAGE_COLUMN = "image"


_DATA_URI = re.compile(r"^data:[^,]*?;base64,", re.IGNORECASE)


def image_items(model_input: Any) -> list[bytes | np.ndarray]:
    """Any accepted input → a list of images, each encoded bytes or a uint8 array."""
    if isinstance(model_input, pd.DataFrame):
        column = IMAGE_COLUMN if IMAGE_COLUMN in model_input.columns else model_input.columns[0]
        cells = list(model_input[column])
    elif isinstance(model_input, pd.Series):
        cells = list(model_input)
    elif isinstance(model_input, Mapping):
        value = model_input.get(IMAGE_COLUMN, next(iter(model_input.values()), []))
        many = isinstance(value, (list, tuple, np.ndarray)) and not _is_pixels(value)
        cells = list(value) if many else [value]
    elif isinstance(model_input, np.ndarray) and model_input.dtype != object:
        cells = list(model_input) if model_input.ndim == 4 else [model_input]
    elif isinstance(model_input, (bytes, bytearray, str)):
        cells = [model_input]
    elif isinstance(model_input, (list, tuple, np.ndarray)):
        cells = list(model_input)
    else:
        raise ValueError(f"unsupported input type {type(model_input).__name__}")
    return [_image_item(index, cell) for index, cell in enumerate(cells)]


def _is_pixels(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype != object and value.ndim in (2, 3)


def _image_item(index: int, cell: Any) -> bytes | np.ndarray:
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return bytes(cell)
    if isinstance(cell, str):
        return decode_base64(cell, index)
    if isinstance(cell, (np.ndarray, list)):
        # Nested lists arrive from JSON ("inputs" with pixel arrays).
        return np.asarray(cell)
    raise ValueError(f"image {index}: cannot decode (unsupported value of type "
                     f"{type(cell).__name__})")


def decode_base64(text: str, index: int = 0) -> bytes:
    """Base64 text, optionally a ``data:image/...;base64,`` URI → bytes."""
    payload = "".join(_DATA_URI.sub("", text.strip(), count=1).split())
    try:
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"image {index}: cannot decode (not valid base64: {exc})") from exc


def to_frame(images: Any) -> pd.DataFrame:
    """Wrap images (anything :meth:`BreedClassifier.predict` accepts) in the signature's frame.

    Use it before ``PyFuncModel.predict``, whose schema check only takes DataFrames: each cell
    of the ``image`` column holds one image (bytes, base64 text or a uint8 array).
    """
    if isinstance(images, pd.DataFrame):
        return images
    cells = image_items(images)
    frame = pd.DataFrame({IMAGE_COLUMN: pd.Series([None] * len(cells), dtype=object)})
    for i, cell in enumerate(cells):
        frame.at[i, IMAGE_COLUMN] = cell  # .at keeps an ndarray cell whole
    return frame
