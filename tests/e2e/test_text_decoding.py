"""The page's entity decoder undoes exactly the server's escaping (markupsafe), in Chromium."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from markupsafe import escape
from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

OpenFeed = Callable[..., Page]
# Characters that make entity decoding go wrong: markup, entity pieces, digits, quotes.
TRICKY = "&<>\"';#xX0123456789abcdefltgmpquos \n\t\u00e9\U0001f600"
FIXED = [
    "",
    "<img src=x onerror=alert(1)>",
    "&lt;b&gt; is how you write <b>",
    "&amp;amp; &#34; &#x27; &#39; &quot;",
    "'single' and \"double\"",
    "&#0; &#xD800; &#99999999; &#x110000;",
    "& alone, &; and &#; and &#x;",
]


def test_decoding_the_escaped_text_gives_back_the_original(open_feed: OpenFeed) -> None:
    page = open_feed("tenant_a")
    rng = random.Random(20260120)
    originals = FIXED + [
        "".join(rng.choice(TRICKY) for _ in range(rng.randint(1, 40))) for _ in range(500)
    ]
    escaped = [str(escape(text)) for text in originals]

    decoded = page.evaluate(
        "async (texts) => {"
        "  const { decodeEntities } = await import('/js/text.js');"
        "  return texts.map(decodeEntities);"
        "}",
        escaped,
    )

    mismatches = [(o, d) for o, d in zip(originals, decoded, strict=True) if o != d]
    assert mismatches == []
