from __future__ import annotations

import pytest

from minipaas.services import validation


@pytest.mark.parametrize("name", ["a", "my-app", "app1", "a" * 63, "1st-app", "x-1-y"])
def test_valid_app_names(name: str) -> None:
    assert validation.check_app_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "A", "my_app", "-app", "app-", "a" * 64, "app.one", "app one", "ápp", "app\n"]
)
def test_invalid_app_names(name: str) -> None:
    with pytest.raises(ValueError, match="DNS label"):
        validation.check_app_name(name)


@pytest.mark.parametrize(
    "image",
    [
        "nginx",
        "nginx:1.27",
        "library/nginx:latest",
        "registry.example.com:5000/team/app:v2",
        "localhost/app",
        "ghcr.io/owner/repo-name_x:1.0.0-rc1",
        "app@sha256:" + "a" * 64,
        "minipaas-test/hello:v1",
    ],
)
def test_valid_image_references(image: str) -> None:
    assert validation.check_image_reference(image) == image


@pytest.mark.parametrize(
    "image",
    [
        "",
        "Nginx",
        "UPPER/case",
        "nginx:",
        "nginx:bad tag",
        ":latest",
        "app@sha256:short",
        "a" * 256,
        "nginx --privileged",
        "-v /:/host",
        "app:" + "t" * 129,
    ],
)
def test_invalid_image_references(image: str) -> None:
    with pytest.raises(ValueError, match="Docker image reference"):
        validation.check_image_reference(image)


def test_env_names_and_values() -> None:
    assert validation.check_env({"A": "1", "_B2": ""}) == {"A": "1", "_B2": ""}
    for bad in ({"1A": "x"}, {"A-B": "x"}, {"": "x"}):
        with pytest.raises(ValueError, match="env name"):
            validation.check_env(bad)
    with pytest.raises(ValueError, match="without NUL"):
        validation.check_env({"A": "x\x00y"})
    with pytest.raises(ValueError, match="at most"):
        validation.check_env({f"V{i}": "x" for i in range(101)})


def test_command_is_normalized_to_argv() -> None:
    assert validation.normalize_command(None) is None
    assert validation.normalize_command("httpd -f -p '8 0'") == ["httpd", "-f", "-p", "8 0"]
    assert validation.normalize_command(["a", "b c"]) == ["a", "b c"]
    for bad in ("", [], "unbalanced 'quote"):
        with pytest.raises(ValueError):
            validation.normalize_command(bad)


def test_health_check_paths() -> None:
    assert validation.check_health_path("/healthz?full=1") == "/healthz?full=1"
    for bad in ("healthz", "/a b", "/x\n", "/" + "a" * 255):
        with pytest.raises(ValueError, match="health_check_path"):
            validation.check_health_path(bad)


def test_a_name_of_digits_only_is_refused_as_it_would_read_as_an_id() -> None:
    with pytest.raises(ValueError, match="digits only"):
        validation.check_app_name("3")
    assert validation.check_app_name("3d") == "3d"
