"""Models: backbones, builders, training, tuning, features, evaluation, trust, baseline.

Import the modules directly (``from dogbreeds.models import ...``): this file imports nothing,
so a stage depends only on the modules it uses.
"""

__all__ = ["backbones", "baseline", "builders", "calibration", "comparison", "conformal",
           "distribute", "evaluation", "features", "fit", "gate", "modeldir", "multiworker",
           "novelty", "probe", "record",
           "scratch", "shards", "transfer", "trust", "trust_report", "tuners", "tuning",
           "tuning_cluster"]
