"""Models: backbones, builders, training, tuning, features, evaluation, comparison, distribute."""

__all__ = ["backbones", "builders", "comparison", "distribute", "evaluation", "features",
           "training", "tuning"]
