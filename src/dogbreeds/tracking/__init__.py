"""MLflow: store (where runs go, stage runs), registry (champion), figures."""

__all__ = ["figures", "registry", "registry_cli", "store"]
