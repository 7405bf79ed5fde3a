"""F12: the connection reset at every point of a ``role apply``. Whatever was cut, the run ends
with a clear error (never 255), and a plain re-run converges: the role exists once, with its one
IAM mapping and its grants, and a third run has nothing to do.

In the test matrix (dsql-facts.md §R5.2), F12 restarts a proxy during the run; here :mod:`tests.faultproxy` cuts the
connection at its k-th client chunk, for every k until a run completes untouched, so every
statement boundary (and the middle of the login) gets its reset.
"""

from __future__ import annotations

import uuid

import pytest

from tests.clirun import invoke

pytestmark = pytest.mark.sandbox

ACCOUNT = "123456789012"


def test_f12_reset_at_every_point_of_role_apply_then_rerun_converges(sandbox, cluster, proxy, via_proxy,  # type: ignore[no-untyped-def]
                                                                    tmp_path) -> None:
    table = f"f12_{uuid.uuid4().hex[:8]}"
    with sandbox.connect(cluster, autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v int)")
    cut_runs = 0
    for k in range(1, 80):
        role = f"f12_{uuid.uuid4().hex[:8]}"
        arn = f"arn:aws:iam::{ACCOUNT}:role/{role}"
        f = tmp_path / f"roles-{k}.yaml"
        f.write_text(f"roles:\n  - name: {role}\n    login: true\n    iam: [{arn}]\n    grants:\n"
                     f"      - {{privileges: [SELECT, INSERT], on: table public.{table}}}\n")
        proxy.cut_at_up_chunk = k
        try:
            first = invoke(["role", "apply", str(f)])
        finally:
            proxy.cut_at_up_chunk = None
        if first.exit_code == 0:
            break  # k is past the last chunk of a whole run: every earlier point was cut
        cut_runs += 1
        # 254: the cut came before anything ran; 1: the plan ran part-way and says what did not apply.
        assert first.exit_code in (1, 254), (k, first.exit_code, first.stderr)
        assert "error" in first.stderr and "internal error" not in first.stderr, (k, first.stderr)
        assert "Traceback" not in first.stderr

        again = invoke(["role", "apply", str(f)])
        assert again.exit_code == 0, (k, again.stderr)
        third = invoke(["-o", "json", "role", "apply", str(f)])
        assert third.exit_code == 0 and third.json()["plan"] == [], (k, third.stdout)
        listed = [r for r in invoke(["-o", "json", "role", "list"]).json() if r["name"] == role]
        assert len(listed) == 1 and listed[0]["iam"] == [arn] and listed[0]["login"] is True, (k, listed)
    else:
        raise AssertionError("role apply never completed without a cut")
    assert cut_runs >= 5  # the login and several statements were each cut at least once
