"""Text the server sends (often written by an app) made harmless for a terminal.

An app controls its log lines, and a user their app's names and health paths: printed as they
are, an escape sequence could retitle the terminal, clear it or forge earlier output, and Rich
markup (`[red]...`) would be interpreted. So every control character is shown as a visible
escape (`\\x1b`), which also defuses whole escape sequences, and markup is never parsed.
"""

from __future__ import annotations

import re
from typing import Any

from rich.markup import escape
from rich.text import Text

# C0 controls but tab and newline, DEL, C1 controls (0x9b is a one-byte CSI), and Unicode's
# bidirectional overrides and isolates (they reorder what the terminal shows)
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def plain(value: Any) -> str:
    """The value as text with no control character left but tab and newline."""
    return _UNSAFE.sub(_visible, str(value).replace("\r\n", "\n"))


def markup(value: Any) -> str:
    """For an f-string printed with Rich markup: plain, and its brackets escaped."""
    return escape(plain(value))


def rich_text(value: Any, style: str = "") -> Text:
    """For a Rich table cell or line: never parsed as markup, no emoji codes, no highlighting."""
    return Text(plain(value), style=style)
