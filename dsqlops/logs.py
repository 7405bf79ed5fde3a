"""Logging with redaction. ``--debug`` logs dsqlops' own steps, never botocore's wire log.

Everything that reaches a log handler passes :func:`redact`, which removes SigV4 signatures,
session tokens, credentials and passwords, so a token that slips into a message is not leaked.
"""

from __future__ import annotations

import logging
import re

_PATTERNS = [
    (re.compile(r"(X-Amz-(?:Signature|Security-Token|Credential)=)[^&\s'\"]+", re.I), r"\1<redacted>"),
    (re.compile(r"(password\s*[=:]\s*)('[^']*'|\"[^\"]*\"|[^\s&,;]+)", re.I), r"\1<redacted>"),
    (re.compile(r"(PGPASSWORD\s*=\s*)\S+"), r"\1<redacted>"),
    (re.compile(r"((?:aws_)?secret(?:_access)?_key\s*[=:]\s*)\S+", re.I), r"\1<redacted>"),
    (re.compile(r"(\b[^\s/?]+\.on\.aws/\?Action=DbConnect(?:Admin)?)&\S+"), r"\1&<redacted>"),
]


def redact(text: str) -> str:
    for pat, repl in _PATTERNS:
        text = pat.sub(repl, text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not hide the record
            msg = str(record.msg)
        record.msg = redact(msg)
        record.args = ()
        return True


def setup_logging(debug: bool) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_dsqlops", False):
            root.removeHandler(h)
    handler = logging.StreamHandler()
    handler._dsqlops = True  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("dsqlops").setLevel(logging.DEBUG if debug else logging.WARNING)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    # Never let botocore/urllib3/psycopg print wire traffic, even at --debug.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "psycopg", "moto", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
