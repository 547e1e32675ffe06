"""Answer guard: an engine reply that is not an answer must not be charged or measured.

Scrapers in particular return HTTP 200 with whatever the page showed: a log-in wall, a
"still generating" placeholder, the prompt echoed back. Such a run fails with the reason.
"""

from __future__ import annotations

import re

from app.extraction.folding import fold

_MIN_WORDS_FOR_LONG_ANSWER = 40
# A wall or placeholder page leads with its message; a real answer may mention logging in later.
_PAGE_MESSAGE_CHARS = 50
_PROMPT_ECHO_EXTRA_WORDS = 8

_PLACEHOLDERS = tuple(
    re.compile(pattern)
    for pattern in (
        r"^(loading|thinking|searching|generating|please wait)\b",
        r"snapshot is (still )?building",
        r"\b(answer|response) (is )?not (yet )?ready\b",
        r"^something went wrong",
        r"^an error occurred",
        r"^(null|none|undefined|n/?a)$",
        r"^(\.\.\.|…)$",
        r"try again (later|in \d+)",
    )
)

_WALLS = tuple(
    re.compile(pattern)
    for pattern in (
        r"\b(log ?in|sign ?in|sign ?up|create (a |an |your )?(free )?account)\b.{0,40}"
        r"\b(to continue|to (get|see|view|use)|for free|to unlock)\b",
        r"\b(please|you must|you need to) (log ?in|sign ?in|sign ?up)\b",
        r"\bverify (that )?you are (a )?human\b",
        r"\bunusual activity\b",
        r"\benable (javascript|cookies)\b",
        r"\bcaptcha\b",
    )
)


def invalid_answer_reason(answer: str, prompt: str) -> str | None:
    """Why `answer` is not a real answer to `prompt`, or None when it is one."""
    text = " ".join(fold(answer).casefold().split())
    if not text:
        return "empty answer"
    question = " ".join(fold(prompt).casefold().split())
    if _echoes(text, question):
        return "answer repeats the prompt"
    words = len(text.split())
    # A long answer may quote such phrases; only a short page that is nothing but them is a wall.
    if words < _MIN_WORDS_FOR_LONG_ANSWER:
        lead = text[:_PAGE_MESSAGE_CHARS]
        if any(pattern.search(lead) for pattern in _PLACEHOLDERS):
            return "scraper placeholder instead of an answer"
        if any(pattern.search(lead) for pattern in _WALLS):
            return "sign-up or log-in wall instead of an answer"
    return None


def _echoes(text: str, question: str) -> bool:
    if not question:
        return False
    stripped = text.strip(" \"'?.!")
    core = question.strip(" \"'?.!")
    if stripped == core:
        return True
    extra = len(text.split()) - len(question.split())
    return text.startswith(core) and extra <= _PROMPT_ECHO_EXTRA_WORDS
