"""The pure parts of `role check`: principals and clock skew."""

from __future__ import annotations

import datetime as dt

from dsqlops.data.rolecheck import MAX_SKEW_SECONDS, clock_skew, principal_of


def test_assumed_role_sessions_count_as_their_role():
    assert principal_of("arn:aws:sts::123456789012:assumed-role/app/session-1") == \
        "arn:aws:iam::123456789012:role/app"
    assert principal_of("arn:aws-cn:sts::123456789012:assumed-role/ops/x") == "arn:aws-cn:iam::123456789012:role/ops"
    assert principal_of("arn:aws:iam::123456789012:user/bob") == "arn:aws:iam::123456789012:user/bob"


def test_clock_skew_from_an_http_date_header():
    now = dt.datetime(2026, 11, 27, 4, 0, 0, tzinfo=dt.UTC)
    assert clock_skew("Fri, 27 Nov 2026 04:00:00 GMT", now) == 0
    ahead = clock_skew("Fri, 27 Nov 2026 03:50:00 GMT", now)
    assert ahead == 600 and ahead > MAX_SKEW_SECONDS
    assert clock_skew("Fri, 27 Nov 2026 04:00:30 GMT", now) == -30
    assert clock_skew(None, now) is None and clock_skew("garbage", now) is None
