"""The redaction and repair rules of safe_context_agent._sanitize (issue 13)."""

from __future__ import annotations

import logging

import pytest

from safe_context_agent._sanitize import (
    RedactingFilter,
    redact,
    redact_url,
    repair_surrogates,
    split_url_credentials,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://admin:PW@host:8000/v1", "http://***@host:8000/v1"),
        ("see https://tok@host/x and http://a:b@c/", "see https://***@host/x and http://***@c/"),
        ("Authorization: Bearer sk-abcdef123", "Authorization: *** ***"),
        ("header bearer abcdefgh", "header bearer ***"),
        ('{"api_key": "sk-1234"}', '{"api_key": "***"}'),
        ("vllm serve m --api-key sk-9999 --port 1", "vllm serve m --api-key *** --port 1"),
        ("x-api-key=abcd1234;", "x-api-key=***;"),
        ("no secret in http://host/v1", "no secret in http://host/v1"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_known_secrets_are_removed_anywhere() -> None:
    assert redact("the key MYKEY123 leaked", ("MYKEY123",)) == "the key *** leaked"
    assert redact("abc", ("abc",)) == "abc"  # too short to be told from ordinary text


def test_url_credentials_are_split_off() -> None:
    assert split_url_credentials("http://u:p%40ss@[::1]:8000/v1?q=1") == (
        "http://[::1]:8000/v1?q=1",
        ("u", "p@ss"),
    )
    assert split_url_credentials("http://host/v1") == ("http://host/v1", None)
    assert redact_url(None) is None


def test_lone_surrogates_become_the_replacement_character() -> None:
    assert repair_surrogates("a\ud800b\udcffc") == "a\ufffdb\ufffdc"
    assert repair_surrogates("fine ✓") == "fine ✓"


def test_the_log_filter_redacts_formatted_records() -> None:
    record = logging.LogRecord(
        "httpx", logging.INFO, __file__, 1, "HTTP %s", ("http://a:PW@h/v1",), None
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "HTTP http://***@h/v1"
