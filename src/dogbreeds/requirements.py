"""The pinned pip requirements a logged model needs at inference.

A neutral home: the training stages (``models.record``) and the served model
(``serving.pyfunc``) both log models with these pins, and neither should import the other.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import re

# What a served model imports; pins are taken from the project's own requirements.
SERVING_PACKAGES = ("mlflow", "tensorflow-cpu", "keras", "numpy", "pandas", "h5py", "pillow",
                    "pillow-heif",  # pillow-heif: HEIC photos
                    # the trust bundle's code (calibration, conformal sets, novelty)
                    "scikit-learn", "scipy", "matplotlib")


def pip_requirements() -> list[str]:
    """Pinned requirements for inference, from the project's pins (else installed versions)."""
    pins: dict[str, str] = {}
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for req in importlib.metadata.requires("dogbreeds") or []:
            match = re.match(r"^([A-Za-z0-9_.\-]+)\s*==\s*([^;\s]+)", req)
            if match:
                pins[match.group(1).lower()] = match.group(2)
    reqs = []
    for name in SERVING_PACKAGES:
        version = pins.get(name)
        if version is None:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                version = importlib.metadata.version(name)
        reqs.append(f"{name}=={version}" if version else name)
    return reqs
