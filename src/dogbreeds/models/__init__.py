"""Models: backbones, builders, scratch, fit, record, modeldir, tuning, tuners, features,
transfer, evaluation, comparison, distribute."""

__all__ = ["backbones", "builders", "comparison", "distribute", "evaluation", "features", "fit",
           "modeldir", "record", "scratch", "transfer", "tuners", "tuning"]
