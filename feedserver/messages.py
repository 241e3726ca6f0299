"""Message text rules: one pure function that every publish path calls."""

from __future__ import annotations

import re
import unicodedata

from markupsafe import escape

from .errors import ValidationFailed

# C0/C1 controls except tab and newline (a regex character-class body; also in the OpenAPI
# document), and lone surrogates (not encodable as UTF-8).
CONTROL_CHARACTERS = "\x00-\x08\x0b-\x1f\x7f-\x9f"
_FORBIDDEN = re.compile(f"[{CONTROL_CHARACTERS}\ud800-\udfff]")
# The characters markupsafe's `escape` replaces: text without them is already escaped, and
# skipping the call (a `Markup` made, then copied back to `str`) saves most of its cost.
_HTML_SPECIAL = re.compile("[&<>'\"]")


def normalise_message(raw: object, max_length: int) -> str:
    """Return the stored form of a message: NFC, trimmed, checked, HTML-escaped.

    CRLF is folded to LF first, because browsers and curl scripts send either.
    The length limit counts characters of the text as written, before escaping.
    """
    if not isinstance(raw, str):
        raise _invalid("must be a string")
    text = raw.replace("\r\n", "\n")
    # Checked before trimming: str.strip() would silently drop controls such as \x1c or
    # \x85 at the edges, and the rule is that they are refused, not cleaned.
    if _FORBIDDEN.search(text):
        raise _invalid("must not contain control characters other than newline and tab")
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        raise _invalid("must not be empty")
    if len(text) > max_length:
        raise _invalid(f"must be at most {max_length} characters (got {len(text)})")
    return str(escape(text)) if _HTML_SPECIAL.search(text) else text


def _invalid(reason: str) -> ValidationFailed:
    return ValidationFailed("Invalid message", {"message": reason})
