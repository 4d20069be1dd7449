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
    pin_images,
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
        # Docker joins a continued line as it is (no space): a word run on over lines is
        # refused in what names images; Docker splits lines at \n only, words at \r, \v, \f
        ("FROM m\\\np-builds/app-9:3\n", "runs on over a continued line"),
        ("FR\\\nOM mp-builds/app-9:3\n", "runs on over a continued line"),
        ("FROM\x0cmp-builds/app-9:3\n", "another app's build"),
        ("FROM\rmp-builds/app-9:3\n", "another app's build"),
        ("FROM busybox\nADD http:\\\n//169.254.169.254/x /x\n", "runs on over a continued"),
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


_IDS = {"debian:12": "sha256:" + "d" * 64, "tools:1": "e" * 64, "base": "sha256:" + "b" * 64}


def test_images_are_pinned_to_their_ids_where_the_dockerfile_names_them() -> None:
    text = (
        "\ufeffARG BASE=debian\r\n"
        "FROM --platform=linux/amd64 ${BASE}:12 AS build\r\n"
        "RUN make\r\n"
        "FROM scratch\n"
        "COPY --chown=1:1 \\\n"
        "     --from=tools:1  /bin/tool /\n"
        "COPY --from=build /out /\n"
        "FROM build\n"
        "# FROM base\n"
    )
    pinned, found = pin_images(text, {}, _IDS.get)
    assert pinned.split("\n") == [
        "\ufeffARG BASE=debian\r",
        f"FROM --platform=linux/amd64 sha256:{'d' * 64} AS build\r",
        "RUN make\r",
        "FROM scratch",
        "COPY --chown=1:1 \\",
        f"     --from=sha256:{'e' * 64}  /bin/tool /",
        "COPY --from=build /out /",
        "FROM build",
        "# FROM base",
        "",
    ]
    assert [(f.image.reference, f.image_id) for f in found] == [
        ("debian:12", "sha256:" + "d" * 64),
        ("tools:1", "sha256:" + "e" * 64),
    ]
    # What the engine reads names the same images, by id now
    assert [i.reference for i in base_images(pinned, {})] == [f.image_id for f in found]


def test_an_image_not_on_the_host_or_not_on_one_line_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="line 1: image 'nowhere:1' is not on this host"):
        pin_images("FROM nowhere:1\n", {}, _IDS.get)
    with pytest.raises(InvalidRequest, match="line 1: a word of this FROM runs on"):
        pin_images("FROM deb\\\nian:12\n", {}, _IDS.get)


@pytest.mark.parametrize(
    "trigger",
    [
        "RUN true\nCOPY --from=mp-builds/app-7:3 /app /loot",
        "# escape=`\nCOPY --from=x / /",
        "RUN true\r\nADD http://169.254.169.254/ /m",
    ],
)
def test_a_trigger_of_more_than_one_line_is_refused(trigger: str) -> None:
    with pytest.raises(InvalidRequest, match="ONBUILD trigger 1"):
        check_triggers(BaseImage(1, "hand-made:1"), [trigger])


@pytest.mark.parametrize(
    "dockerfile",
    [
        'FROM scratch\nCOPY --"from"=mp-builds/app-7:3 / /loot\n',
        "FROM scratch\nCOPY --fr\\om=evil:1 /a /b\n",
        'FROM scratch\nCOPY --chown="0 0" --from=evil:1 /a /b\n',
        "FROM scratch\nCOPY --chown=0\u00a0--from=evil:1 /a /b\n",
        'FROM scratch\nONBUILD COPY --"from"=mp-builds/app-7:3 / /loot\n',
        "FROM scratch\nCOPY -- --from=evil:1 /a\n",
        "FROM --platform=linux/amd64 --platform=x evil:1\n",
        "FROM scratch\nADD --from=evil:1 /a /b\n",
    ],
)
def test_flags_docker_could_read_otherwise_are_refused(dockerfile: str) -> None:
    """Docker removes quotes and backslashes in flags and splits them at bytes of UTF-8
    letters: a flag this reader does not take as written never reaches the engine."""
    with pytest.raises(InvalidRequest, match=r"line [12]: (COPY|ADD|FROM) flag"):
        pin_images(dockerfile, {}, _IDS.get)


def test_a_trigger_with_a_quoted_from_flag_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="ONBUILD trigger 1"):
        check_triggers(BaseImage(1, "hand-made:1"), ['COPY --"from"=mp-builds/app-7:3 / /loot'])


def test_every_from_is_written_out_so_the_engine_expands_nothing() -> None:
    """Docker fills in its proxy build args (HTTP_PROXY, ...) without an ARG: a FROM word
    the engine would expand otherwise is written as this reader's value."""
    text = "FROM ${HTTP_PROXY:-scratch} AS one\nFROM ${NAME:-one}\n"
    pinned, found = pin_images(text, {"HTTP_PROXY": "mp-builds/app-7:3"}, _IDS.get)
    assert pinned == "FROM scratch AS one\nFROM one\n" and found == []


def test_a_stage_copying_from_its_own_name_names_an_image() -> None:
    """Docker knows a stage by its name only once it ended: inside it, the name is an image."""
    text = "FROM scratch AS base\nCOPY --from=base / /x\nFROM base\n"
    pinned, found = pin_images(text, {}, _IDS.get)
    assert [f.image.reference for f in found] == ["base"]
    assert pinned == f"FROM scratch AS base\nCOPY --from=sha256:{'b' * 64} / /x\nFROM base\n"


def test_the_word_is_replaced_on_the_instructions_lines_not_in_a_comment() -> None:
    pinned, _ = pin_images("FROM \\\n# debian:12\ndebian:12\n  from debian:12\n", {}, _IDS.get)
    d = f"sha256:{'d' * 64}"
    assert pinned == f"FROM \\\n# debian:12\n{d}\n  from {d}\n"


def test_a_control_character_docker_keeps_as_a_line_is_refused() -> None:
    """Python's strip() takes U+001C-U+001F for space, Docker's parser does not: such a line
    ends a continued instruction there and would hide the next one from this reader."""
    text = "FROM alpine\nRUN echo \\\n\x1c\nFROM other-builds/app:latest\n"
    with pytest.raises(InvalidRequest, match="line 3: control character"):
        pin_images(text, {}, _IDS.get)


@pytest.mark.parametrize(
    ("copy", "refused"),
    [
        ("COPY --from=0 /a /b", None),
        ("COPY --from=1 /a /b", "no stage that ended"),
        ("COPY --from=99999999999999999999 /a /b", "no stage that ended"),
        ("COPY --from=$STAGE /a /b", "takes no variables"),
    ],
)
def test_a_numeric_from_is_an_index_of_an_ended_stage_only(copy: str, refused: str | None) -> None:
    text = f"FROM scratch\nFROM scratch\n{copy}\n"
    if refused is None:
        assert pin_images(text, {}, _IDS.get) == (text, [])
    else:
        with pytest.raises(InvalidRequest, match=f"line 3: .*{refused}"):
            pin_images(text, {}, _IDS.get)


@pytest.mark.parametrize(
    "dockerfile",
    [
        "FROM scratch\nCOPY --chown=1\\\n--from=tools:1 \\\n--from=tools:1 /a /b\n",
        "FROM ${HTTP_PROXY:-scr\\\natch} AS ${HTTP_PROXY:-scratch}\n",
        "FROM scratch\nCOPY --fr\\\nom=tools:1 /a --from=tools:1\n",
    ],
)
def test_a_word_run_on_over_a_continued_line_is_refused_where_images_are_named(
    dockerfile: str,
) -> None:
    """Docker joins a continued line with no space: such a word cannot be rewritten where it
    is written, and the first equal word after it may be another (a stage name, a target)."""
    with pytest.raises(InvalidRequest, match="runs on over a continued line"):
        pin_images(dockerfile, {"HTTP_PROXY": "mp-builds/app-7:3"}, _IDS.get)


def test_continued_lines_with_spaces_are_pinned_where_the_word_is() -> None:
    text = (
        "\\\nFROM \\\n  tools:1\\\n AS x\nFROM scratch\nCOPY --chown=1 \\\n  --from=tools:1 /a /b\n"
    )
    pinned, found = pin_images(text, {}, _IDS.get)
    e = f"sha256:{'e' * 64}"
    assert pinned == text.replace("tools:1", e)
    assert [f.image.reference for f in found] == ["tools:1", "tools:1"]
