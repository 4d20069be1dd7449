"""The error every host service (PostgreSQL, Redis, the Docker engine, the platform) raises."""

from __future__ import annotations


class HostServiceError(Exception):
    """A service on this host could not be installed, started or reached; one line for the user."""
