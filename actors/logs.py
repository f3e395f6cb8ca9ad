"""Logging for every posguard process: loguru, human lines or JSON lines, secrets redacted.

Actor processes are forked and thespian closes inherited descriptors, so each process opens
its own sinks: `ensure_process_logging()` (called by every actor on each message, cheap after
the first) re-applies the settings inherited from the parent when it finds itself in a new pid.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Literal

from loguru import logger

from adapters.bounds import Text
from adapters.ccxt.settings import MIN_SECRET_LEN

Level = Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"]


@dataclass(frozen=True, slots=True)
class LogSettings:
    file: Text | None = None         # None: no log file
    level: Level = "INFO"            # for the file
    stderr_level: Level = "WARNING"  # for the terminal (keeps the live status readable)
    json: bool = False               # JSON lines instead of human lines


_settings: LogSettings | None = None
_configured_pid: int | None = None
_secrets: set[str] = set()

HUMAN = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {process} | {message}"


def register_secret(value: str | None) -> None:
    """Never print this value: every sink replaces it with ***."""
    if value and len(value) >= MIN_SECRET_LEN:
        _secrets.add(value)


# Whatever the process, values that follow these names are credentials (request headers and
# parameters a library may quote in an error): redacted even where the key itself is unknown.
_CREDENTIAL = re.compile(r"(?i)(api[-_]?key|x-bapi-api-key|x-mbx-apikey|secret|signature|x-bapi-sign|"
                         r"listenkey)(\W{1,4})([A-Za-z0-9+/=_\-]{8,})")


def redact(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "***")
    return _CREDENTIAL.sub(r"\1\2***", text)


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 20:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _patch(record: dict[str, Any]) -> None:
    record["message"] = redact(record["message"])
    if record["exception"] is not None:
        # A traceback prints the text of every exception in its chain (`raise ... from`), which
        # can quote a request or a reply; loguru formats it later, so decide here.
        texts = [str(e) for e in _chain(record["exception"].value)]
        if any(redact(t) != t for t in texts):
            record["message"] += " [exception text redacted: " + " <- ".join(redact(t)[:200] for t in texts) + "]"
            record["exception"] = None


def configure_logging(settings: LogSettings) -> None:
    """Apply in this process; forked children re-apply the same settings themselves."""
    global _settings, _configured_pid
    _settings = settings
    _configured_pid = os.getpid()
    logger.remove()
    logger.configure(patcher=_patch)
    # diagnose=False: loguru would otherwise print every local variable's value in a traceback,
    # keys included; backtrace=False keeps tracebacks to the frames that matter.
    logger.add(sys.stderr, level=settings.stderr_level, format=HUMAN, serialize=settings.json, diagnose=False,
               backtrace=False)
    if settings.file:
        os.makedirs(os.path.dirname(os.path.abspath(settings.file)), exist_ok=True)
        logger.add(settings.file, level=settings.level, format=HUMAN, serialize=settings.json, enqueue=False,
                   diagnose=False, backtrace=False)


def ensure_process_logging() -> None:
    if _settings is not None and _configured_pid != os.getpid():
        configure_logging(_settings)
