"""hdshub: a hardened JupyterHub for health-data research (hub side)."""

__version__ = "0.1.0"
