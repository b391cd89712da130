"""ferry's lab plugins for OpenStack services (see README.md)."""
