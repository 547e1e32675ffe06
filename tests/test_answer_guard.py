"""The answer guard: what is not an answer is named as such; real answers pass."""

from __future__ import annotations

import pytest

from app.engines.guard import invalid_answer_reason

QUESTION = "What is the best CRM for startups?"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "empty answer"),
        ("  \n\t ", "empty answer"),
        ("What is the best CRM for startups?", "answer repeats the prompt"),
        ("what is the best crm for startups", "answer repeats the prompt"),
        ('"What is the best CRM for startups?"', "answer repeats the prompt"),
        ("What is the best CRM for startups? Let me think.", "answer repeats the prompt"),
        ("Loading...", "scraper placeholder instead of an answer"),
        ("Thinking", "scraper placeholder instead of an answer"),
        (
            "Snapshot is building, try again in 10s",
            "scraper placeholder instead of an answer",
        ),
        ("The answer is not ready yet.", "scraper placeholder instead of an answer"),
        ("Something went wrong. Please retry.", "scraper placeholder instead of an answer"),
        ("null", "scraper placeholder instead of an answer"),
        (
            "Log in or sign up to get smarter responses, upload files and images, and more.",
            "sign-up or log-in wall instead of an answer",
        ),
        ("Sign up for free to continue", "sign-up or log-in wall instead of an answer"),
        ("Please log in to use Perplexity.", "sign-up or log-in wall instead of an answer"),
        (
            "Verify you are human by completing the action below.",
            "sign-up or log-in wall instead of an answer",
        ),
    ],
)
def test_not_an_answer(answer: str, reason: str) -> None:
    assert invalid_answer_reason(answer, QUESTION) == reason


@pytest.mark.parametrize(
    "answer",
    [
        "HubSpot is a popular choice.",
        "The best CRMs are **HubSpot**, Salesforce and Pipedrive. Log in to HubSpot to continue.",
        "I could not find information about Acme Analytics.",
        "What is the best CRM for startups? It depends on your team, but here are the options "
        "most teams shortlist: HubSpot for its free tier, Pipedrive for sales pipelines, "
        "Zoho for price, and Salesforce when you expect to grow fast and need integrations.",
        "1. **Acme** — loading dashboards is fast\n2. **Globex** — good support",
    ],
)
def test_real_answers_pass(answer: str) -> None:
    assert invalid_answer_reason(answer, QUESTION) is None
