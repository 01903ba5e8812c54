"""Models: backbones, builders, scratch, fit, record, modeldir, tuning, tuners, features,
transfer, evaluation, comparison, distribute; and the trust layer: calibration, conformal,
novelty, trust (the bundle and the shared answer), trust_report (evaluate's trust step)."""

__all__ = ["backbones", "builders", "calibration", "comparison", "conformal", "distribute",
           "evaluation", "features", "fit", "modeldir", "novelty", "record", "scratch",
           "transfer", "trust", "trust_report", "tuners", "tuning"]
