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
