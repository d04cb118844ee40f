"""occystrap: copy container images fast and in bounded memory."""

__version__ = "0.5.0.dev0"
