"""The one exit-code enum and the error hierarchy.

Core code raises a :class:`DsqlopsError` subclass; the CLI's single translation point
(:func:`dsqlops.cli.main.main`) prints ``error: <message>`` (and ``hint: …``) to stderr and exits
with ``exc.exit_code``. Codes follow the AWS CLI where it has one (252/253/254/255, 130).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    #: The command ran, but what it ran or waited on ended badly: a job or cluster FAILED,
    #: an invariant broke, a check did not pass, a conformance target was missed.
    FAILED = 1
    #: A budget is forecast (or already) exceeded (`dsqlops report`, `cost --budget`).
    BUDGET_EXCEEDED = 3
    #: The result was printed but is incomplete: part of it could not be computed (e.g. clusters in a
    #: region the price table does not price).
    INCOMPLETE = 5
    #: A bounded wait (`--timeout`) ran out; the thing waited on may still finish: re-run to resume.
    TIMEOUT = 4
    #: Another run holds the lock (cron overlap), EX_TEMPFAIL.
    LOCKED = 75
    #: Interrupted by SIGINT (Ctrl-C).
    INTERRUPTED = 130
    #: Stopped by SIGTERM (128 + 15, what a shell reports for a process killed by it).
    TERMINATED = 143
    #: Bad arguments or input (the AWS CLI's 252).
    USAGE = 252
    #: Environment, configuration or credentials are missing or invalid (253).
    CONFIG = 253
    #: AWS or the database answered with an error (254).
    SERVICE = 254
    #: Anything else: a bug or an unexpected failure (255).
    INTERNAL = 255


def first_line(exc: BaseException) -> str:
    """An exception's first line of text, or its class name when it has none (for one-line reports)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class DsqlopsError(Exception):
    """Base class. ``message`` is one line, safe to print (never contains a token)."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, *, hint: str | None = None, exit_code: ExitCode | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(DsqlopsError):
    """Bad input: an argument, an identifier, a file's content."""

    exit_code = ExitCode.USAGE


class ConfigError(DsqlopsError):
    """Configuration, environment or credentials problem."""

    exit_code = ExitCode.CONFIG


class ServiceError(DsqlopsError):
    """AWS or the database returned an error. ``code`` is the AWS error code or SQLSTATE."""

    exit_code = ExitCode.SERVICE

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None,
                 request_id: str | None = None):
        super().__init__(message, hint=hint)
        self.code = code
        self.request_id = request_id


class NotFoundError(ServiceError):
    pass


class ConflictError(ServiceError):
    pass


class OperationFailed(DsqlopsError):
    """What we ran or waited on ended in failure (job failed, cluster FAILED, check failed)."""

    exit_code = ExitCode.FAILED


class WaitTimeout(DsqlopsError):
    exit_code = ExitCode.TIMEOUT


class BudgetExceeded(DsqlopsError):
    exit_code = ExitCode.BUDGET_EXCEEDED


class Incomplete(DsqlopsError):
    exit_code = ExitCode.INCOMPLETE


class Locked(DsqlopsError):
    exit_code = ExitCode.LOCKED



class Terminated(BaseException):
    """SIGTERM, raised in the main thread (``dsqlops.cli.main``) so that cleanup runs as it does on
    Ctrl-C: ``finally`` and ``with`` blocks remove temp files and release locks, bench writes its
    partial results. A BaseException, like KeyboardInterrupt, so ``except Exception`` does not
    swallow it; unlike it, click does not turn it into an "Aborted!"."""

    signal_name = "SIGTERM"
