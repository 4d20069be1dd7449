"""The images a Dockerfile builds on (FROM, COPY --from), held to the rules of `image`.

The engine would otherwise build on any image the host has or can pull: another app's build
(its source), an image pulled with the host's registry credentials, or one ALLOWED_IMAGES
refuses. So each one is checked as if the member had set it as the app's image.
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from minipaas.config import Settings
from minipaas.db.models import User
from minipaas.services import quotas, validation
from minipaas.services.builds import naming
from minipaas.services.errors import InvalidRequest

# $NAME, ${NAME}, ${NAME:-default}, ${NAME:+alternative}: what Docker expands in FROM
_VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_]\w*)(?::(?P<op>[-+])(?P<word>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))",
    re.ASCII,
)
# A flag as this reader takes it: --name=value, ASCII, no quotes or backslashes (Docker
# removes those inside a flag, and splits a flag at bytes 0x85 and 0xA0 of a UTF-8 letter)
_FLAG = re.compile(r"--(?P<name>[a-z]+)=(?P<value>[A-Za-z0-9_.:/@+,=${}-]*)")
# The flags each instruction may have (others are BuildKit's, or not Docker's)
_FLAGS_ALLOWED = {"FROM": {"platform"}, "COPY": {"from", "chown", "chmod"}, "ADD": {"chown"}}


@dataclass(frozen=True)
class BaseImage:
    line: int
    reference: str
    from_line: bool = True  # a stage is FROM it (its ONBUILD triggers run); else COPY --from
    # Where it is written, for pin_images: the word as the Dockerfile has it (before ARGs are
    # filled in), and the instruction's last line (continued lines)
    written: str = field(default="", compare=False)
    last_line: int = field(default=0, compare=False)


# Docker's parser splits lines at \n only (a \r before it dropped) and words at these; a
# line ending in a backslash and spaces or tabs goes on with the next line, joined as it is
_WORD_SEPARATOR = re.compile(r"[\t\v\f\r ]+")
_CONTINUATION = re.compile(r"\\[ \t]*$")


def _lines(text: str) -> list[str]:
    return [line.removesuffix("\r") for line in text.split("\n")]


def _instructions(text: str) -> list[tuple[int, str, list[str]]]:
    """(first line number, instruction, words) of each instruction (see _spans)."""
    return [(start, name, words) for start, _, name, words in _spans(text)]


def _spans(text: str) -> list[tuple[int, int, str, list[str]]]:
    """(first line, last line, instruction, words), lines joined and split as Docker's parser
    does: comment lines dropped anywhere, empty lines inside a continued instruction too,
    and a continued line's text appended with its leading spaces (no space added)."""
    _check_characters(text)
    found: list[tuple[int, int, str, list[str]]] = []
    pending: str | None = None
    start = last = 0
    glued = False  # a word of the instruction runs on over a continued line
    for number, raw in enumerate(_lines(text), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        _check_line_end(raw, number)
        if pending is None:
            start, glued = number, False
            line = raw.lstrip()
        else:
            line = raw
            glued = glued or (bool(pending) and not pending[-1].isspace() and not line[0].isspace())
        last = number
        if _CONTINUATION.search(line):
            pending = (pending or "") + _CONTINUATION.sub("", line)
            continue
        _add_instruction(found, start, last, (pending or "") + line, glued)
        pending = None
    if pending is not None:
        _add_instruction(found, start, last, pending, glued)
    return found


# Control characters Python's strip() takes for space and Docker's parser does not: a line of
# one would be blank here and an instruction's end there
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def _check_characters(text: str) -> None:
    found = _CONTROL.search(text)
    if found is not None:
        number = text.count("\n", 0, found.start()) + 1
        raise InvalidRequest(
            f"Dockerfile line {number}: control character {found.group()!r} is not supported; "
            "remove it",
            loc=("body",),
        )


# Instructions whose words name images (pin_images rewrites them where they are written)
_NAMING_IMAGES = frozenset({"FROM", "COPY", "ADD", "ONBUILD"})


def _add_instruction(
    found: list[tuple[int, int, str, list[str]]], start: int, last: int, line: str, glued: bool
) -> None:
    words = [word for word in _WORD_SEPARATOR.split(line.strip()) if word]
    if not words:
        return
    if glued and words[0].upper() in _NAMING_IMAGES:
        raise InvalidRequest(
            f"Dockerfile line {start}: a word of this {words[0].upper()} runs on over a "
            "continued line; end the line with a space before the backslash, or start the "
            "next one with a space",
            loc=("body",),
        )
    found.append((start, last, words[0].upper(), words[1:]))


def _check_line_end(raw: str, number: int) -> None:
    """Docker continues a line ending in a backslash and spaces or tabs only (as this reader
    does). A backslash followed by other whitespace (a no-break space, say) reads as continued
    to anything that strips all whitespace, and one ending in two backslashes is read
    differently by Docker versions: both refused, so no reader can join what Docker keeps
    apart."""
    docker_continues = raw.rstrip(" \t").endswith("\\")
    if docker_continues != raw.strip().endswith("\\") or raw.rstrip(" \t").endswith("\\\\"):
        raise InvalidRequest(
            f"Dockerfile line {number}: end the line with one backslash and nothing after it "
            "but spaces, or with none",
            loc=("body",),
        )


# A parser directive: "# name=value" on the Dockerfile's first lines, before anything else
_DIRECTIVE = re.compile(r"#\s*(?P<name>[A-Za-z][A-Za-z0-9_]*)\s*=\s*(?P<value>.*?)\s*")


def _check_directives(text: str) -> None:
    """Another escape character joins and splits lines otherwise than this reader does,
    which could hide a line from it: refused, as nothing needs it on Linux."""
    for number, raw in enumerate(_lines(text), start=1):
        directive = _DIRECTIVE.fullmatch(raw.strip())
        if directive is None:
            return  # directives end at the first line that is not one
        if directive.group("name").lower() == "escape" and directive.group("value") != "\\":
            raise InvalidRequest(
                f"Dockerfile line {number}: the escape directive is not supported; remove it "
                "and write the Dockerfile with the default escape character (\\)",
                loc=("body",),
            )


_URL_STARTS = ("http://", "https://")


def _check_add_sources(words: list[str], line: int) -> None:
    """ADD from a URL is refused: the engine itself would fetch it, from the host's network
    (its loopback services, a cloud's metadata address) and with no size bound. Docker
    expands variables and removes quotes and backslashes before it looks for a URL, so a
    source with a variable is refused too, and quotes do not hide one."""
    # Flags come first (Docker stops at the first other word); the last word is the target
    sources = list(itertools.dropwhile(lambda word: word.startswith("--"), words))[:-1]
    for word in sources:
        bare = word.translate({ord(char): None for char in "\"'\\"}).lstrip("[")
        # What a variable could complete to a URL: `app-$V.tgz` cannot, `$SRC` or `ht$X` can
        literal = bare.partition("$")[0]
        completes = "$" in bare and any(url.startswith(literal) for url in _URL_STARTS)
        if "://" in bare or completes or bare.startswith("git@"):
            raise InvalidRequest(
                f"Dockerfile line {line}: ADD from a URL, or from a source named by a "
                "variable, is not allowed; put the file in the context and name it as it is "
                "(or use COPY), or download it in a RUN step",
                loc=("body",),
            )


def _arg_words(words: list[str], line: int) -> list[str]:
    """ARG's words as Docker splits them: quotes keep spaces (`ARG X="a B=c"` declares X only),
    and are removed."""
    try:
        return shlex.split(" ".join(words), comments=False, posix=True)
    except ValueError:
        raise InvalidRequest(
            f"Dockerfile line {line}: an ARG with an unclosed quote", loc=("body",)
        ) from None


def _expand(value: str, known: dict[str, str], line: int) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        current = known.get(name, "")
        if match.group("op") == "-":
            return current or match.group("word")
        if match.group("op") == "+":
            return match.group("word") if current else ""
        return current

    expanded = _VARIABLE.sub(replace, value)
    # Anything but a plain reference (empty, quoted, odd) may resolve otherwise in the
    # engine than here: refused rather than guessed at
    if "$" in expanded or not validation.IMAGE_REFERENCE_PATTERN.fullmatch(expanded):
        raise InvalidRequest(
            f"Dockerfile line {line}: cannot tell which image {value!r} names; write the base "
            "image's name, or use ARG NAME=default before the first FROM",
            loc=("body",),
        )
    return expanded


def _flags(instruction: str, words: list[str], line: int) -> tuple[dict[str, str], list[str]]:
    """The leading flags (name -> value) and the words after them. A word starting with --
    that is not a plain --name=value this instruction takes is refused: Docker reads quotes,
    backslashes and some bytes of UTF-8 letters in flags otherwise than a plain split, and
    a flag it reads that this reader does not (--"from"=image) would name an unchecked
    image."""
    flags: dict[str, str] = {}
    for index, word in enumerate(words):
        if not word.startswith("--"):
            return flags, words[index:]
        flag = _FLAG.fullmatch(word)
        allowed = _FLAGS_ALLOWED.get(instruction, set())
        if flag is None or flag.group("name") not in allowed or flag.group("name") in flags:
            raise InvalidRequest(
                f"Dockerfile line {line}: {instruction} flag {word[:100]!r} is not supported; "
                f"write each of {', '.join(f'--{n}' for n in sorted(allowed)) or 'none'} once "
                "as --name=value, without quotes or backslashes",
                loc=("body",),
            )
        flags[flag.group("name")] = flag.group("value")
    return flags, []


def base_images(text: str, build_args: dict[str, str]) -> list[BaseImage]:
    """Images named by FROM and COPY --from, with global ARGs and build args filled in;
    stage names, stage numbers and `scratch` are not images."""
    return [use.image for use in _image_words(text, build_args) if use.is_image]


@dataclass(frozen=True)
class _Use:
    image: BaseImage
    is_image: bool = True  # else a stage or scratch


def _image_words(text: str, build_args: dict[str, str]) -> list[_Use]:
    """Every word that names what a stage starts from or copies from: images, and (FROM
    only) stages and scratch, each with its value once ARGs are filled in."""
    known: dict[str, str] = {}
    stages: set[str] = set()  # stages that ended: a stage's own name is an image inside it
    current: str | None = None
    ended = 0  # stages that ended (what an index in --from may name)
    found: list[_Use] = []
    seen_from = False
    text = text.removeprefix("\ufeff")  # Docker drops a byte order mark, directives follow it
    _check_directives(text)
    for line, last_line, instruction, words in _spans(text):
        trigger = instruction == "ONBUILD"
        if trigger and words:
            # A trigger runs in a later build FROM this image: held to the same rules now
            instruction, words = words[0].upper(), words[1:]
        if instruction == "ARG" and not seen_from and not trigger:
            for word in _arg_words(words, line):  # ARG A=1 B=2 declares both
                name, has_default, default = word.partition("=")
                known[name] = build_args.get(name, default if has_default else "")
        elif instruction == "FROM" and not trigger:
            if seen_from:
                ended += 1
            seen_from = True
            if current is not None:
                stages.add(current)
            _, names = _flags("FROM", words, line)
            if not names:
                continue
            reference = _expand(names[0], known, line)
            is_image = reference.lower() != "scratch" and reference.lower() not in stages
            found.append(_Use(BaseImage(line, reference, True, names[0], last_line), is_image))
            current = names[2].lower() if len(names) >= 3 and names[1].lower() == "as" else None
        elif instruction in ("COPY", "ADD"):
            if instruction == "ADD":
                _check_add_sources(words, line)
            flags, _ = _flags(instruction, words, line)
            if "from" not in flags:
                continue
            if trigger:
                # It runs in a later build, where this file's stage names mean nothing
                raise InvalidRequest(
                    f"Dockerfile line {line}: ONBUILD with --from is not supported; copy from "
                    "the stage in the Dockerfile that builds FROM this image",
                    loc=("body",),
                )
            if "$" in flags["from"]:  # the classic builder does not expand it
                raise InvalidRequest(
                    f"Dockerfile line {line}: COPY --from takes no variables here; write the "
                    "stage or image name",
                    loc=("body",),
                )
            source = _expand(flags["from"], known, line)
            if source.isdigit():
                if int(source) < ended:
                    continue  # a stage by its index
                raise InvalidRequest(
                    f"Dockerfile line {line}: COPY --from={source} is no stage that ended "
                    "before this one",
                    loc=("body",),
                )
            if source.lower() not in stages:
                written = f"--from={flags['from']}"
                found.append(_Use(BaseImage(line, source, False, written, last_line)))
    return found


def runs_steps(text: str) -> bool:
    """The Dockerfile may run a step of its own: a RUN, or any ONBUILD (a trigger runs in
    this very build when a later stage is FROM its stage). Its base images' triggers are
    the builder's to look at."""
    text = text.removeprefix("\ufeff")
    return any(instruction in ("RUN", "ONBUILD") for _, instruction, _ in _instructions(text))


def check_base_images(
    settings: Settings,
    text: str,
    *,
    build_args: dict[str, str],
    app_id: int,
    user: User,
    triggers_of: Callable[[str], list[str]] = lambda _: [],
) -> None:
    """A 422 naming the Dockerfile line whose image the builder may not use, also for the
    ONBUILD triggers `triggers_of` finds in an image a stage is built FROM."""
    for image in base_images(text, build_args):
        try:
            quotas.check_image_allowed(settings, image.reference)
            quotas.check_image_by_id(settings, image.reference, user=user)
            naming.check_not_a_build(settings, image.reference, app_id=app_id, user=user)
        except InvalidRequest as exc:
            raise InvalidRequest(f"Dockerfile line {image.line}: {exc}", loc=("body",)) from None
        if image.from_line:
            check_triggers(image, triggers_of(image.reference))


def check_triggers(image: BaseImage, triggers: list[str]) -> None:
    """The ONBUILD triggers of an image a stage is FROM run in this build, where a
    trigger's --from could name any image on the host (another app's build) and its ADD
    fetch from the host's network: held to the rules of the Dockerfile's own ONBUILD
    lines. Docker stores a trigger as one line and parses each on its own, so one holding a
    line break or a comment (a hand-made image's) could hide a second instruction from
    this reader: refused. A 422 naming the FROM line."""
    for number, trigger in enumerate(triggers, start=1):
        try:
            if "\n" in trigger or "\r" in trigger or trigger.lstrip().startswith("#"):
                raise InvalidRequest("a trigger of more than one line is not supported")
            if len(_spans(trigger)) != 1:
                raise InvalidRequest("a trigger is one instruction")
            if base_images(f"ONBUILD {trigger}", {}):
                raise InvalidRequest("ONBUILD with --from is not supported")
        except InvalidRequest as exc:
            reason = exc.message.removeprefix("Dockerfile line 1: ")
            raise InvalidRequest(
                f"Dockerfile line {image.line}: image {image.reference!r} has ONBUILD trigger "
                f"{number} ({trigger[:200]!r}), which the builder would run: {reason}; build "
                "FROM another image",
                loc=("body",),
            ) from None


@dataclass(frozen=True)
class PinnedImage:
    image: BaseImage
    image_id: str  # sha256:<hex>


def pin_images(
    text: str, build_args: dict[str, str], resolve: Callable[[str], str | None]
) -> tuple[str, list[PinnedImage]]:
    """The Dockerfile with each image it is FROM or copies --from written as the id the
    image has now on this host (`resolve`: a reference's id, None when absent). The engine
    then reads the image that was checked (a tag moved meanwhile changes nothing), and
    never pulls: the classic builder pulls a missing base image even with pull=false.
    Also returns each image with its id. A 422 for an image not on this host, or one the
    reader cannot rewrite."""
    lines = text.split("\n")
    found = []
    for use in _image_words(text, build_args):
        image = use.image
        if not use.is_image:  # a stage or scratch: as the reader took it, ARGs filled in
            new = image.reference
        else:
            image_id = resolve(image.reference)
            if image_id is None:
                raise InvalidRequest(
                    f"Dockerfile line {image.line}: image {image.reference!r} is not on this "
                    "host; base images are never pulled: build or load it on the host first",
                    loc=("body",),
                )
            pinned = f"sha256:{image_id.removeprefix('sha256:')}"
            found.append(PinnedImage(image, pinned))
            new = pinned if image.from_line else f"--from={pinned}"
        if new != image.written and not _replace_word(
            lines, image.line, image.last_line, image.written, new
        ):
            raise InvalidRequest(
                f"Dockerfile line {image.line}: write the image name {image.written!r} on one "
                "line (not continued onto the next)",
                loc=("body",),
            )
    return "\n".join(lines), found


def _replace_word(lines: list[str], first: int, last: int, word: str, new: str) -> bool:
    """Replaces the first whitespace-separated `word` after the instruction word on lines
    first..last (1-based) that are part of the instruction (comment and empty lines inside
    it are not: Docker drops them); False when no such line holds it whole."""
    # No word of these instructions runs on over a line (_add_instruction refuses that), so
    # each is whole on one line; the first word is the instruction, and the word wanted is
    # the first after it that equals it (flags precede, and none is written twice)
    instruction_seen = False
    for index in range(first - 1, last):
        stripped = lines[index].strip()
        if stripped.startswith("#") or not stripped:
            continue
        parts = re.split(r"([\t\v\f\r ]+)", _CONTINUATION.sub("", lines[index]))
        tail = lines[index][len("".join(parts)) :]  # the continuation, kept as it was
        words = [position for position in range(0, len(parts), 2) if parts[position]]
        if not instruction_seen and words:
            words, instruction_seen = words[1:], True
        for position in words:
            if parts[position] == word:
                parts[position] = new
                lines[index] = "".join(parts) + tail
                return True
    return False
