"""MLflow: the store and stage runs, the registry and its champion, figures.

Import the modules directly (``from dogbreeds.tracking import ...``): this file imports nothing,
so a stage depends only on the modules it uses.
"""

__all__ = ["figures", "lineage", "registry", "registry_cli", "store"]
