"""A psycopg connection that gives up on a server that stops answering.

libpq has no read timeout: once a query is sent, a server (or a middlebox) that never answers
keeps the client in ``select()`` forever, and TCP keepalives do not help while the peer's kernel
still acknowledges. DSQL ends every transaction after 5 minutes (SQLSTATE 54000, dsql-facts.md §3.5), so
no statement it accepts legitimately stays unanswered much longer than that: the default
``statement_timeout`` of dsqlops (330 s) is that cap plus a grace period. When a round trip takes
longer, the connection is closed and :class:`NoAnswer` (an ``OperationalError``, so callers treat
it as a lost connection: never retried blindly, a COMMIT's outcome unknown) is raised.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors


class NoAnswer(psycopg.OperationalError):
    pass


class DeadlineConnection(psycopg.Connection[Any]):
    #: Seconds one round trip may take; ``None``: wait forever (psycopg's default).
    answer_timeout: float | None = None

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        limit = timeout if timeout is not None else self.answer_timeout
        try:
            return super().wait(gen, interval=interval, timeout=limit)
        except errors._WaitTimeout:
            if timeout is not None:  # the caller asked for this bound itself
                raise
            self.close()  # its state is unknown mid-protocol: nothing may reuse it
            raise NoAnswer(f"no answer from the server within {limit:.0f} s (statement_timeout); "
                           "the connection was closed") from None
