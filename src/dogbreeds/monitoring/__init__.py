"""Watching production: recent answers and staff corrections against the champion's baseline.

Import the modules directly (``from dogbreeds.monitoring import ...``): this file imports
nothing, so a stage depends only on the modules it uses.
"""

__all__ = ["drift", "monitor", "report", "traffic"]
