"""MLflow: store (where runs go, stage runs), registry (champion), figures."""

__all__ = ["figures", "lineage", "registry", "registry_cli", "store"]
