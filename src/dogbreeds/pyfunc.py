"""Compatibility: versions registered before the subpackage layout pickled their model class
as ``dogbreeds.pyfunc.BreedClassifier``; loading them needs this name to resolve."""

from dogbreeds.serving.pyfunc import *  # noqa: F403
from dogbreeds.serving.pyfunc import BreedClassifier  # noqa: F401
