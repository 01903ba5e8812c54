"""Models: backbones, builders, scratch, fit, record, modeldir, tuning, tuners, features,
transfer, evaluation, comparison, distribute, multiworker, shards, tuning_cluster."""

__all__ = ["backbones", "builders", "comparison", "distribute", "evaluation", "features", "fit",
           "modeldir", "multiworker", "record", "scratch", "shards", "transfer", "tuners",
           "tuning", "tuning_cluster"]
