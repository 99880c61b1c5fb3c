"""Logging for journald: readable lines by default, JSON lines on request, never secrets.

Two filters sit on the one handler, so they see every record of every logger
(pack-agent's, python-can's, paho's):

- ``RedactFilter`` replaces each configured secret (the MQTT password...) with
  ``***`` in the message, its arguments and any traceback: a secret that slips
  into an exception message from a library is still not written.
- ``RateLimitFilter`` lets through at most ``burst`` records per message
  template and logger in each ``window_s`` (WARNING and above), then one line
  saying how many were suppressed: a broken frame at 100 Hz cannot fill the disk.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable

REDACTED = "***"
MIN_SECRET_LEN = 4  # shorter "secrets" would redact ordinary words


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            out["exception"] = record.exc_text
        elif record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class RedactFilter(logging.Filter):
    """Replaces secrets in whatever a record would print."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        found = {s for s in secrets if s and len(s) >= MIN_SECRET_LEN}
        self.secrets = sorted(found, key=len, reverse=True)  # longest first

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: print the template, not the arguments
            message = str(record.msg)
        clean = self._redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True


class RateLimitFilter(logging.Filter):
    """At most ``burst`` records per (logger, level, template) in each ``window_s``,
    for records at ``level`` and above; lower levels pass untouched."""

    def __init__(
        self,
        window_s: float = 60.0,
        burst: int = 3,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.burst = burst
        self.level = level
        self._clock = clock
        self._windows: dict[tuple[str, int, str], list[float | int]] = {}  # start, passed, held
        self.suppressed_total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.window_s:
            held = int(window[2]) if window is not None else 0
            self._windows[key] = [now, 1, 0]
            if len(self._windows) > 1000:  # bounded memory: forget the oldest windows
                for old in sorted(self._windows, key=lambda k: self._windows[k][0])[:500]:
                    del self._windows[old]
            if held:
                record.msg = f"{record.getMessage()} ({held} similar messages suppressed)"
                record.args = None
            return True
        if window[1] < self.burst:
            window[1] = int(window[1]) + 1
            return True
        window[2] = int(window[2]) + 1
        self.suppressed_total += 1
        return False


_redactor = RedactFilter()


def add_secrets(secrets: Iterable[str]) -> None:
    """Secrets to redact from every log line from now on (configuration reloads call it)."""
    _redactor.set_secrets([*_redactor.secrets, *secrets])


def setup_logging(
    level: str = "info", fmt: str = "text", secrets: Iterable[str] = ()
) -> logging.Handler:
    """One handler on stderr (journald reads it), with the redaction and rate filters."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):  # journald stamps the time itself
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _redactor.set_secrets(secrets)
    handler.addFilter(RateLimitFilter())
    handler.addFilter(_redactor)  # last: it also redacts the rate limiter's summary line
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)
    return handler


def set_level(level: str) -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    logging.getLogger("can").setLevel(max(root.level, logging.WARNING))
