"""Message rules and the publish schema: refuse with a field error, or store escaped text."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from feedserver.errors import ValidationFailed
from feedserver.messages import normalise_message
from feedserver.schemas import parse_history_query, parse_publish

MAX = 40
# What may remain of `&` after escaping: only the entities markupsafe writes.
ENTITY = re.compile(r"&(amp|lt|gt|#34|#39);")
CONTROLS = [chr(c) for c in (*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0))]


def unescape(text: str) -> str:
    table = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&#34;": '"', "&#39;": "'"}
    return ENTITY.sub(lambda m: table[m.group(0)], text)


# Text that often hits the edges: markup, quotes, combining marks, controls, surrogates.
tricky = st.lists(
    st.sampled_from(
        [
            *("a", " ", "\n", "\t", "\r", "<", ">", "&", '"', "'", "é", "e\u0301", "\u00a0"),
            *("😀", "&amp;", "&lt;", "\x00", "\x1b", "\x7f", "\x85", "\ufeff", "\ud800", "\u2028"),
        ]
    ),
    max_size=60,
).map("".join)


@given(raw=st.text(max_size=80) | tricky)
@example(raw="<script>alert('x')</script>")
@example(raw="a" * MAX)
@example(raw="a" * (MAX + 1))
@example(raw="  \n\t ")
@example(raw="\r\nhi\r\n")
@example(raw="e\u0301" * MAX)  # MAX characters only once composed
def test_any_string_is_refused_with_a_field_error_or_comes_back_escaped(raw: str) -> None:
    try:
        stored = normalise_message(raw, MAX)
    except ValidationFailed as exc:
        assert exc.code == "validation_error" and exc.status == 400
        assert exc.details is not None and set(exc.details) == {"message"}
        assert isinstance(exc.details["message"], str) and exc.details["message"]
        return
    assert not [c for c in raw.replace("\r\n", "") if c in CONTROLS or "\ud800" <= c <= "\udfff"]
    # No raw markup character survives; `&` only as the start of an entity.
    assert not set(stored) & set("<>\"'")
    assert "&" not in ENTITY.sub("", stored)
    text = unescape(stored)
    assert text == unicodedata.normalize("NFC", raw.replace("\r\n", "\n")).strip()
    assert 1 <= len(text) <= MAX


@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=MAX))
def test_clean_text_is_accepted_when_not_blank(text: str) -> None:
    expected = unicodedata.normalize("NFC", text).strip()
    if not expected or len(expected) > MAX:
        with pytest.raises(ValidationFailed):
            normalise_message(text, MAX)
        return
    assert unescape(normalise_message(text, MAX)) == expected


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("hi", "hi"),
        ("  hi \n", "hi"),
        ("<b>&'\"", "&lt;b&gt;&amp;&#39;&#34;"),
        ("&amp;", "&amp;amp;"),
        ("line1\r\nline2", "line1\nline2"),
        ("tab\there", "tab\there"),
        ("e\u0301", "\u00e9"),
    ],
)
def test_examples_of_the_stored_form(raw: str, stored: str) -> None:
    assert normalise_message(raw, 500) == stored


@pytest.mark.parametrize("control", CONTROLS)
@pytest.mark.parametrize("template", ["a{}b", "{}ab", "ab{}", "{}"])
def test_control_characters_anywhere_are_refused_not_trimmed(control: str, template: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        normalise_message(template.format(control), 500)
    assert refused.value.details == {
        "message": "must not contain control characters other than newline and tab"
    }


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(ValidationFailed):
        normalise_message("a\ud83db", 500)


@pytest.mark.parametrize("raw", ["", "   ", "\n\t\r\n"])
def test_blank_is_refused(raw: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        normalise_message(raw, 500)
    assert refused.value.details == {"message": "must not be empty"}


def test_length_counts_characters_before_escaping() -> None:
    assert normalise_message("<" * 10, 10) == "&lt;" * 10
    with pytest.raises(ValidationFailed) as refused:
        normalise_message("x" * 11, 10)
    assert refused.value.details == {"message": "must be at most 10 characters (got 11)"}


@pytest.mark.parametrize("raw", [None, 1, 1.5, True, [], {}, ["hi"]])
def test_non_strings_are_refused(raw: object) -> None:
    with pytest.raises(ValidationFailed) as refused:
        normalise_message(raw, 500)
    assert refused.value.details == {"message": "must be a string"}


# -- the publish payload and the history query ----------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "message"),
        ({"message": None}, "message"),
        ({"message": 5}, "message"),
        ({"message": ["x"]}, "message"),
        ({"message": "x", "tenantId": "tenant_b"}, "tenantId"),
        ({"msg": "x"}, "msg"),
        ([], "body"),
        ("hello", "body"),
        (None, "body"),
        (42, "body"),
    ],
)
def test_publish_payload_refusals_name_the_field(payload: Any, field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_publish(payload)
    assert refused.value.details is not None and field in refused.value.details


def test_publish_payload_gives_the_raw_message() -> None:
    assert parse_publish({"message": " <hi> "}).message == " <hi> "


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, {"limit": 50, "since": None, "before": None}),
        ({"limit": "1"}, {"limit": 1, "since": None, "before": None}),
        ({"limit": "500", "since": "0"}, {"limit": 500, "since": 0, "before": None}),
        ({"before": "9007199254740991"}, {"limit": 50, "since": None, "before": 2**53 - 1}),
    ],
)
def test_history_query_defaults_and_bounds(query: dict[str, str], expected: dict[str, Any]) -> None:
    assert parse_history_query(query) == expected


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"since": "-1"}, "since"),
        ({"since": "abc"}, "since"),
        ({"before": "-5"}, "before"),
        ({"before": "9007199254740992"}, "before"),
        ({"cursor": "3"}, "cursor"),
    ],
)
def test_history_query_refusals_name_the_field(query: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_history_query(query)
    assert refused.value.details is not None and field in refused.value.details
