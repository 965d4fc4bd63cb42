"""pipeline/redaction.py: every secret form `redact` removes (each one the old tools.redact let
through or mangled), the configured secrets of Settings, and the logging filter."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from lensgraph.pipeline.redaction import REDACTED, RedactingFilter, install_log_redaction, redact
from lensgraph.pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
R = REDACTED

CASES = {
    # headers
    "authorization basic": ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: {R}"),
    "authorization token": ("Authorization: token ghp_abcdef1234567890", f"Authorization: {R}"),
    "authorization in json": ('{"Authorization": "Bearer abc.def"}', f'{{"Authorization": "{R}"}}'),
    "authorization in a repr": ("{'authorization': 'Bearer abc'}", f"{{'authorization': '{R}'}}"),
    "basic credentials": ("sent Basic Ym9iOnNlY3JldA== upstream", f"sent Basic {R} upstream"),
    "basic without padding": ("auth Basic dXNlcjpwYXNz ok", f"auth Basic {R} ok"),
    # key/value forms
    "json api_key": ('{"api_key": "abc123secret", "k": 5}', f'{{"api_key": "{R}", "k": 5}}'),
    "json apikey": ('{"apikey":"abc123secret"}', f'{{"apikey":"{R}"}}'),
    "json token": ('{"token": "t0ken-value"}', f'{{"token": "{R}"}}'),
    "json password with an escaped quote": ('{"password": "pa\\"ss"}', f'{{"password": "{R}"}}'),
    "json secret": ('{"client_secret": "zz9zz9"}', f'{{"client_secret": "{R}"}}'),
    "json inside json": ('{\\"secret\\": \\"s3cr3t\\"}', f'{{\\"secret\\": \\"{R}\\"}}'),
    "query token": ("https://h/x?token=abc123&page=2", f"https://h/x?token={R}&page=2"),
    "query api_key": ("https://h/x?q=cat&api_key=abc123&page=2", f"https://h/x?q=cat&api_key={R}&page=2"),
    "password=": ("login password=hunter22 failed", f"login password={R} failed"),
    "secret:": ("secret: s3cr3t", f"secret: {R}"),
    "environment variable": ("OPENAI_API_KEY=abc123 HF_TOKEN=xyz789", f"OPENAI_API_KEY={R} HF_TOKEN={R}"),
    # provider keys
    "short sk- key": ("boom sk-abc123", f"boom {R}"),
    "sk- inside a word is not a key": ("task-abcdefghijklmnop", "task-abcdefghijklmnop"),
    "hugging face token": ("token hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345 refused", f"token {R} refused"),
    # credentials in URLs, any scheme
    "https password with @": ("GET https://bob:p@ss@host/x", f"GET https://{R}@host/x"),
    "redis": ("redis://user:pw@cache:6379/0", f"redis://{R}@cache:6379/0"),
    "postgres": ("postgres://u:pw@db/x", f"postgres://{R}@db/x"),
    "chroma": ("chroma://admin:pw@h:8000", f"chroma://{R}@h:8000"),
    "password with /": ("redis://:pa/ss@cache:6379", f"redis://{R}@cache:6379"),
    "token as user": ("https://ghp_token123@github.com/x.git", f"https://{R}@github.com/x.git"),
}


@pytest.mark.parametrize("text, expected", CASES.values(), ids=CASES.keys())
def test_each_secret_form_is_redacted(text, expected):
    assert redact(text) == expected


def test_harmless_text_is_left_alone():  # the old redact turned "is" into [redacted]
    text = ('the api_key is missing; http://host:8000/v1/chat/completions 1/3 calls; "max_tokens": 12; '
            '"token": null; basic English; hf_hub_download')
    assert redact(text) == text


def test_configured_secrets_are_redacted_wherever_they_appear():
    settings = Settings(
        openai_api_key=SecretStr("plain-secret-value"),
        llm_base_url="http://svc:pw%40rd99@llm.local/v1",
        openai_base_url="https://api.example.com/v1?api_key=qtoken123",
        chroma_url="http://chroma-user:chromapass@db:8000",
    )
    text = "key plain-secret-value; password pw@rd99 and pw%40rd99; query qtoken123; chromapass leaked"
    clean = redact(text, settings)
    for secret in ("plain-secret-value", "pw@rd99", "pw%40rd99", "qtoken123", "chromapass"):
        assert secret not in clean, clean


def test_pipeline_tools_re_exports_redact():
    from lensgraph.adapters import tools

    assert tools.redact is redact


def test_the_logging_filter_redacts_messages_arguments_and_tracebacks():
    settings = Settings(openai_api_key=SecretStr("plain-secret-value"))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("lensgraph")
    logger.addHandler(handler)
    try:
        installed = install_log_redaction(settings)
        assert installed in handler.filters and install_log_redaction() is installed  # idempotent
        assert handler.filters.count(installed) == 1
        child = logging.getLogger("lensgraph.test")  # a child's record reaches the handler by propagation
        child.warning("calling %s with %s", "https://bob:p@ss@host/v1", {"api_key": "abc123secret"})
        try:
            raise RuntimeError("boom plain-secret-value sk-abc123")
        except RuntimeError:
            child.exception("request failed with Authorization: Bearer tok123")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "calling https://[redacted]@host/v1" in out and "Traceback" in out and "RuntimeError: boom" in out
    for secret in ("p@ss", "abc123secret", "plain-secret-value", "sk-abc123", "tok123"):
        assert secret not in out, out


def test_the_filter_redacts_what_caplog_captures(caplog):
    with caplog.at_level(logging.INFO, logger="lensgraph"):
        install_log_redaction()  # caplog's handler is on the root logger now
        logging.getLogger("lensgraph.test").info("token %s", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345")
    assert "hf_AbCd" not in caplog.text and "token [redacted]" in caplog.text


def test_a_broken_format_string_is_still_logged_redacted():
    record = logging.LogRecord("lensgraph", logging.ERROR, __file__, 1, "%s %s password=%s", ("only one",), None)
    assert RedactingFilter().filter(record) is True
    assert "only one" in record.getMessage() and record.args is None


def test_nothing_is_installed_at_import_time():
    code = ("import logging, lensgraph.adapters.tools, lensgraph.adapters.agent, lensgraph.adapters.mcp_server, lensgraph.pipeline.redaction as r\n"
            "handlers = [logging.lastResort, *logging.getLogger().handlers, *logging.getLogger('lensgraph').handlers]\n"
            "print(sum(isinstance(f, r.RedactingFilter) for h in handlers for f in h.filters))")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
