"""Logs: human lines or JSON lines by config, and secrets never printed."""

from __future__ import annotations

import json

from loguru import logger

from actors.logs import LogSettings, configure_logging, register_secret


def test_json_lines_with_secrets_redacted(tmp_path):
    path = tmp_path / "pg.log"
    register_secret("sk-test-0123456789")
    configure_logging(LogSettings(file=str(path), level="INFO", stderr_level="CRITICAL", json=True))
    try:
        logger.info("signing with key sk-test-0123456789 for BTCUSDT")
        logger.complete()
    finally:
        logger.remove()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records and "BTCUSDT" in records[-1]["record"]["message"]
    assert "sk-test-0123456789" not in path.read_text()
    assert "***" in records[-1]["record"]["message"]


def test_human_lines(tmp_path):
    path = tmp_path / "pg.log"
    configure_logging(LogSettings(file=str(path), level="INFO", stderr_level="CRITICAL", json=False))
    try:
        logger.warning("stop 61200 attached")
    finally:
        logger.remove()
    line = path.read_text().strip()
    assert "WARNING" in line and "stop 61200 attached" in line and not line.startswith("{")


def test_a_secret_anywhere_in_a_chain_of_exceptions_is_never_printed(tmp_path):
    path = tmp_path / "pg.log"
    register_secret("sk-chained-abcdef123456")
    configure_logging(LogSettings(file=str(path), level="INFO", stderr_level="CRITICAL", json=False))
    try:
        try:
            try:
                raise ValueError("venue said: error sign! origin_string[sk-chained-abcdef123456]")
            except ValueError as inner:
                raise RuntimeError("order failed") from inner
        except RuntimeError:
            logger.exception("create_order crashed")
    finally:
        logger.remove()
    text = path.read_text()
    assert "create_order crashed" in text and "order failed" in text
    assert "sk-chained-abcdef123456" not in text and "***" in text


def test_credentials_a_library_quotes_are_redacted_even_where_the_key_is_unknown(tmp_path):
    path = tmp_path / "pg.log"
    configure_logging(LogSettings(file=str(path), level="INFO", stderr_level="CRITICAL", json=False))
    try:
        logger.error("request failed: GET /v5/order?apiKey=AbCdEf0123456789&signature=ffee00112233445566 -> 401")
    finally:
        logger.remove()
    text = path.read_text()
    assert "AbCdEf0123456789" not in text and "ffee00112233445566" not in text and "apiKey=***" in text
