"""Models: backbones, builders, training, tuning, features, evaluation, distribute."""

__all__ = ["backbones", "builders", "distribute", "evaluation", "features", "training", "tuning"]
