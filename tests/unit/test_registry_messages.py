"""What the engine's word about a registry turns into: unreachable, refused, or failed.

The integration tests see these with a real registry and engine, but on whatever port is free:
the engine's texts here are the ones it gave, on ports that once read as a refusal."""

from __future__ import annotations

import pytest

from minipaas.runtime.base import ImageUnavailable
from minipaas.runtime.registry import RegistryRefused, _registry_failure


@pytest.mark.parametrize("port", [40179, 14010, 5000, 401])
def test_nothing_listening_is_unreachable_whatever_the_port(port: int) -> None:
    registry = f"127.0.0.1:{port}"
    detail = f'Get "http://{registry}/v2/": dial tcp {registry}: connect: connection refused'
    failure = _registry_failure(registry, detail, "minipaas")
    assert isinstance(failure, ImageUnavailable)
    assert "cannot be reached" in str(failure) and registry in str(failure)


@pytest.mark.parametrize(
    "detail",
    [
        'Get "http://127.0.0.1:40179/v2/": unauthorized: authentication required',
        "login attempt to http://127.0.0.1:5000/v2/ failed with status: 401 Unauthorized",
        "no basic auth credentials",
        "failed with status: 401",
    ],
)
def test_a_refusal_names_the_settings_to_check(detail: str) -> None:
    failure = _registry_failure("127.0.0.1:40179", detail, "minipaas")
    assert isinstance(failure, RegistryRefused)
    assert "REGISTRY_USER and REGISTRY_PASSWORD" in str(failure)


@pytest.mark.parametrize(
    "detail",
    [
        "blob upload unknown",
        "manifest invalid: sha256:ab401cd0000000000000000000000000000000000000000000000000000000",
        "name unknown: repository ci-401/app not known to registry",
    ],
)
def test_anything_else_is_a_failure_with_the_engines_words(detail: str) -> None:
    failure = _registry_failure("10.4.0.1:4010", detail, None)
    assert not isinstance(failure, RegistryRefused)
    assert detail in str(failure)
