"""mini-paas: a small, self-hosted Platform-as-a-Service for one host."""

__version__ = "0.1.0"
