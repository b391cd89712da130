"""ferry's model: frozen dataclasses only, no I/O and no SDK imports."""
