"""Models: backbones, builders, scratch, fit, record, modeldir, tuning, tuners, features,
transfer, evaluation, distribute."""

__all__ = ["backbones", "builders", "distribute", "evaluation", "features", "fit", "modeldir",
           "record", "scratch", "transfer", "tuners", "tuning"]
