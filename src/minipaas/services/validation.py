"""Pure checks on what users send: names, image references, env vars, commands."""

from __future__ import annotations

import re
import shlex

APP_NAME_PATTERN = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

# Docker's reference grammar (distribution/reference), without IPv6 registry hosts
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
# Like Docker, a first component is a registry host only with a dot, a port, or "localhost"
_DOMAIN = (
    rf"(?:localhost(?::[0-9]+)?|{_DOMAIN_PART}(?:\.{_DOMAIN_PART})+(?::[0-9]+)?"
    rf"|{_DOMAIN_PART}:[0-9]+)"
)
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE_PATTERN = re.compile(
    rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?"
)
# How Docker names a local image by id: "sha256:<hex>", or bare hex. A name of hex digits
# alone that is no tagged image is looked up as a prefix of an image id, however short
# ("FROM 3f" runs the one image whose id starts with 3f): all of them count as ids
IMAGE_ID_PATTERN = re.compile(r"sha256:[0-9a-fA-F]+|[0-9a-f]{1,64}")
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

MAX_IMAGE_LENGTH = 255
MAX_ENV_VARS = 100
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_COMMAND_ARGS = 64
MAX_COMMAND_ARG_LENGTH = 4096


def check_app_name(name: str) -> str:
    if not APP_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            "name must be a DNS label: 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit (e.g. 'my-app')"
        )
    if name.isdigit():
        # The CLI reads digits as an id: a name like '3' would pick another app
        raise ValueError("name cannot be digits only (it would read as an id); add a letter")
    return name


def check_image_reference(image: str) -> str:
    if len(image) > MAX_IMAGE_LENGTH or not IMAGE_REFERENCE_PATTERN.fullmatch(image):
        raise ValueError(
            "image must be a Docker image reference such as 'nginx', 'nginx:1.27', "
            "'registry.example.com:5000/team/app:v2' or 'app@sha256:<digest>' "
            f"(lowercase repository, at most {MAX_IMAGE_LENGTH} characters)"
        )
    return image


def is_image_id(image: str) -> bool:
    return IMAGE_ID_PATTERN.fullmatch(image) is not None


def is_unicode(text: str) -> bool:
    """False for a lone surrogate ("\\ud800" in JSON): no UTF-8 can hold it."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_env(env: dict[str, str]) -> dict[str, str]:
    if len(env) > MAX_ENV_VARS:
        raise ValueError(f"env may hold at most {MAX_ENV_VARS} variables")
    for key, value in env.items():
        if not ENV_NAME_PATTERN.fullmatch(key) or len(key) > 255:
            raise ValueError(
                f"env name {key[:50]!r} is not valid: use letters, digits and '_', "
                "not starting with a digit"
            )
        if "\x00" in value or not is_unicode(value) or len(value.encode()) > MAX_ENV_VALUE_BYTES:
            raise ValueError(
                f"env value of {key} must be text without NUL, at most {MAX_ENV_VALUE_BYTES} bytes"
                " (UTF-8; no lone surrogate such as \\ud800)"
            )
    return env


def normalize_command(command: str | list[str] | None) -> list[str] | None:
    """A command is kept as an argv list; a string is split like a shell would."""
    if command is None:
        return None
    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as exc:
            raise ValueError(f"command could not be split into arguments: {exc}") from None
    if not command:
        raise ValueError("command must not be empty; leave it out to use the image's CMD")
    if len(command) > MAX_COMMAND_ARGS:
        raise ValueError(f"command may have at most {MAX_COMMAND_ARGS} arguments")
    for arg in command:
        if "\x00" in arg or len(arg) > MAX_COMMAND_ARG_LENGTH:
            raise ValueError(
                f"command arguments must be text without NUL, at most "
                f"{MAX_COMMAND_ARG_LENGTH} characters each"
            )
    return command


def check_health_path(path: str) -> str:
    if (
        not path.startswith("/")
        or len(path) > 255
        or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in path)
    ):
        raise ValueError(
            "health_check_path must be a URL path starting with '/', without spaces, "
            "at most 255 characters (e.g. '/healthz')"
        )
    return path
