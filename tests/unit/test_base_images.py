"""The images a Dockerfile builds on are read as Docker reads them, and held to the rules."""

from __future__ import annotations

import pytest

from minipaas.config import Settings
from minipaas.db.models import User, UserRole
from minipaas.services.builds.base_images import (
    BaseImage,
    base_images,
    check_base_images,
    check_triggers,
    runs_steps,
)
from minipaas.services.errors import InvalidRequest

MEMBER = User(id=7, username="member", role=UserRole.MEMBER, disabled=False)
ADMIN = User(id=1, username="admin", role=UserRole.ADMIN, disabled=False)


def test_from_and_copy_from_with_stages_args_and_continuations() -> None:
    text = (
        "# syntax comment\n"
        "ARG BASE=debian\n"
        "ARG TAG\n"
        "FROM --platform=linux/amd64 ${BASE}:${TAG:-bookworm} AS build\n"
        "RUN make\n"
        "FROM scratch\n"
        "COPY --from=build /out /\n"
        "COPY --from=0 /out /again\n"
        "COPY --chown=1:1 \\\n"
        "     --from=other/tools:1 /bin/tool /\n"
        "FROM build\n"
    )
    assert base_images(text, {}) == [
        BaseImage(4, "debian:bookworm"),
        BaseImage(9, "other/tools:1", from_line=False),
    ]
    assert base_images(text, {"TAG": "trixie", "BASE": "mine"})[0].reference == "mine:trixie"


def test_a_name_that_cannot_be_worked_out_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="line 1: cannot tell which image"):
        base_images("FROM $$weird\n", {})


def _settings(allowed: str = "*") -> Settings:
    return Settings(instance_name="mp", allowed_images=allowed)


def test_a_member_may_not_build_on_another_apps_build() -> None:
    other = "FROM mp-builds/app-9:3\n"
    with pytest.raises(InvalidRequest, match="line 1: image 'mp-builds/app-9:3' is another"):
        check_base_images(_settings(), other, build_args={}, app_id=5, user=MEMBER)
    copied = "FROM scratch\nCOPY --from=mp-builds/app-9:3 /src /src\n"
    with pytest.raises(InvalidRequest, match="line 2"):
        check_base_images(_settings(), copied, build_args={}, app_id=5, user=MEMBER)
    # through a build arg too
    hidden = "ARG B=busybox\nFROM $B\n"
    with pytest.raises(InvalidRequest, match="line 2"):
        check_base_images(
            _settings(), hidden, build_args={"B": "mp-builds/app-9:3"}, app_id=5, user=MEMBER
        )
    # its own builds, and anything for an admin, are fine
    check_base_images(_settings(), "FROM mp-builds/app-5:2\n", build_args={}, app_id=5, user=MEMBER)
    check_base_images(_settings(), other, build_args={}, app_id=5, user=ADMIN)


def test_allowed_images_apply_to_base_images_and_ids_are_refused_to_members() -> None:
    with pytest.raises(InvalidRequest, match="not allowed here"):
        check_base_images(
            _settings("minipaas-base:*"), "FROM debian:12\n", build_args={}, app_id=5, user=MEMBER
        )
    check_base_images(
        _settings("minipaas-base:*"),
        "FROM minipaas-base:bookworm\n",
        build_args={},
        app_id=5,
        user=MEMBER,
    )
    by_id = "FROM sha256:" + "a" * 64 + "\n"
    with pytest.raises(InvalidRequest, match="by id"):
        check_base_images(_settings(), by_id, build_args={}, app_id=5, user=MEMBER)


@pytest.mark.parametrize(
    "dockerfile",
    [
        # Docker Hub's prefix: the engine finds the local mp-builds/app-9 all the same
        "FROM docker.io/mp-builds/app-9:3\n",
        "FROM index.docker.io/mp-builds/app-9:3\n",
        "FROM scratch\nCOPY --from=docker.io/mp-builds/app-9:3 /src /src\n",
        # quotes: Docker removes them from ARG values
        'ARG IMG="mp-builds/app-9:3"\nFROM $IMG\n',
        "ARG IMG='mp-builds/app-9:3'\nFROM ${IMG}\n",
        # several names on one ARG line
        "ARG A=1 IMG=mp-builds/app-9:3\nFROM $IMG\n",
    ],
)
def test_another_apps_build_is_refused_however_it_is_written(dockerfile: str) -> None:
    with pytest.raises(InvalidRequest, match="another app's build"):
        check_base_images(_settings(), dockerfile, build_args={}, app_id=5, user=MEMBER)


@pytest.mark.parametrize(
    ("dockerfile", "says"),
    [
        # another escape character would join the COPY into the RUN line for this reader
        ("# escape=`\nFROM busybox\nRUN echo \\\nCOPY --from=mp-builds/app-9:3 / /x\n", "escape"),
        ('ARG IMG\nFROM "$IMG"\n', "cannot tell which image"),
        ("ARG EMPTY\nFROM $EMPTY\n", "cannot tell which image"),
    ],
)
def test_what_docker_could_read_otherwise_is_refused(dockerfile: str, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says):
        check_base_images(_settings(), dockerfile, build_args={}, app_id=5, user=MEMBER)


def test_the_default_escape_directive_and_plain_comments_are_fine() -> None:
    text = "# escape=\\\n# syntax comment\nFROM busybox:1\n"
    check_base_images(_settings(), text, build_args={}, app_id=5, user=MEMBER)
    assert base_images('ARG B="busybox:1"\nFROM $B\n', {}) == [BaseImage(2, "busybox:1")]


def test_a_short_run_of_hex_digits_is_an_id_to_the_engine() -> None:
    """The engine reads a name of hex digits as the prefix of an image id, however short."""
    for name in ("3f", "deadbeef", "0123456789ab"):
        with pytest.raises(InvalidRequest, match="by id"):
            check_base_images(_settings(), f"FROM {name}\n", build_args={}, app_id=5, user=MEMBER)
    check_base_images(_settings(), "FROM deadbeef:1\n", build_args={}, app_id=5, user=MEMBER)


@pytest.mark.parametrize(
    ("dockerfile", "says"),
    [
        # this reader's strip() would join the lines after a no-break space; Docker does not
        ("FROM busybox\nRUN true \\\u00a0\nFROM mp-builds/app-9:3\n", "end the line"),
        # two backslashes: Docker versions differ on whether the line goes on
        ("FROM busybox\nRUN echo \\\\\nFROM mp-builds/app-9:3\n", "end the line"),
        # Docker drops a byte order mark, so the escape directive after it counts
        ("\ufeff# escape=`\nFROM busybox\nRUN true \\\nFROM mp-builds/app-9:3\n", "escape"),
        # quotes keep the space: X is declared, B keeps its value
        ('ARG B=mp-builds/app-9:3\nARG X="a B=busybox"\nFROM $B\n', "another app's build"),
        # a trigger runs in a later build FROM this image
        ("FROM busybox\nONBUILD COPY --from=mp-builds/app-9:3 / /x\n", "ONBUILD with --from"),
        # the engine would fetch these itself, from the host's network
        ("FROM busybox\nADD http://169.254.169.254/latest/ /x\n", "ADD from a URL"),
        ('FROM busybox\nADD ["https://example.com/a", "/a"]\n', "ADD from a URL"),
        ("FROM busybox\nONBUILD ADD http://127.0.0.1:5432/ /x\n", "ADD from a URL"),
        ("ARG Q='unclosed\nFROM busybox\n", "unclosed quote"),
        # Docker skips an empty line inside a continuation: the second B is the ARG's too
        ("ARG B=busybox \\\n\n    B=mp-builds/app-9:3\nFROM $B\n", "another app's build"),
        # Docker expands variables and removes quotes and backslashes before it looks
        ("ARG U=http://169.254.169.254/x\nFROM busybox\nADD $U /x\n", "ADD from a URL"),
        ('FROM busybox\nADD http":"//169.254.169.254/x /x\n', "ADD from a URL"),
        ("FROM busybox\nADD http:/\\/169.254.169.254/x /x\n", "ADD from a URL"),
        # Docker joins a continued line as it is (no space) and splits lines at \n only,
        # words at \r, \v and \f too
        ("FROM m\\\np-builds/app-9:3\n", "another app's build"),
        ("FR\\\nOM mp-builds/app-9:3\n", "another app's build"),
        ("FROM\x0cmp-builds/app-9:3\n", "another app's build"),
        ("FROM\rmp-builds/app-9:3\n", "another app's build"),
        ("FROM busybox\nADD http:\\\n//169.254.169.254/x /x\n", "ADD from a URL"),
        ("FROM busybox\nADD\rhttp://169.254.169.254/ /x\n", "ADD from a URL"),
        # flags only come first: a last word that looks like one is the target
        ("FROM busybox\nADD http://169.254.169.254/latest/ --x\n", "ADD from a URL"),
        ("FROM busybox\nADD ${JAR_FILE} app.jar\n", "ADD from a URL"),
        # a trigger's --from would name a stage of a later build, or an image
        ("FROM busybox AS deadbeef\nFROM busybox\nONBUILD COPY --from=deadbeef / /x\n", "ONBUILD"),
    ],
)
def test_what_would_hide_an_image_or_reach_the_host_is_refused(dockerfile: str, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says):
        check_base_images(_settings(), dockerfile, build_args={}, app_id=5, user=MEMBER)


def test_plain_continuations_copies_and_triggers_pass() -> None:
    text = (
        "FROM busybox:1\n"
        "RUN true \\  \n"
        "    && echo ok\n"
        "ADD --chown=1:1 local.tar /opt/$HOME\n"
        "ADD --chown=$U:$G app-$VERSION.tar.gz /opt/\r\n"
        "ONBUILD COPY . /app\n"
    )
    assert base_images(text, {}) == [BaseImage(1, "busybox:1")]


@pytest.mark.parametrize(
    ("dockerfile", "runs"),
    [
        ("FROM scratch\nCOPY . /\n", False),
        ("FROM scratch\nONBUILD RUN make\n", True),  # runs here too, under a later FROM stage
        ("FROM scratch\n# RUN make\nCOPY . /\n", False),
        ("FROM scratch\nrun make\n", True),
        ("FROM scratch\nCOPY a \\\n  b\nRU\\\nN make\n", True),  # continued as Docker does
        ("\ufeffFROM base\r\nRUN true\r\n", True),
    ],
)
def test_a_dockerfile_runs_steps_when_it_has_a_run_of_its_own(dockerfile: str, runs: bool) -> None:
    assert runs_steps(dockerfile) is runs


@pytest.mark.parametrize(
    "trigger",
    [
        "COPY --from=mp-builds/app-3:1 / /stolen",
        "ADD --chown=1 --from=other / /x",
        "ADD http://127.0.0.1:5432/ /x",
        "add $URL /x",
    ],
)
def test_a_base_images_trigger_is_held_to_the_onbuild_rules(trigger: str) -> None:
    image = BaseImage(3, "someone/base:1")
    with pytest.raises(
        InvalidRequest, match="line 3: image 'someone/base:1' has ONBUILD trigger 2"
    ):
        check_triggers(image, ["RUN make", trigger])


def test_plain_triggers_pass() -> None:
    check_triggers(BaseImage(1, "base"), ["RUN make", "COPY . /app", "ADD app.tar.gz /app"])
