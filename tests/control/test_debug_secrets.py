"""At --debug, no control-plane command prints a signature, a session token or a secret key."""

from __future__ import annotations

import json

import pytest

from tests.control.conftest import create

SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYSECRETKEY0001"
SESSION = "FwoGZXIvYXdzSESSIONTOKENdsqlopsTEST0001"
FORBIDDEN = ("X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-Credential", SECRET, SESSION, "Authorization:")


@pytest.fixture()
def creds(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION)


def test_debug_output_has_no_secrets(creds, run, tmp_path):
    c = create(run, "--tag", "a=b")
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"Version": "2012-10-17", "Statement": []}))
    cid = c["id"]
    commands = [
        ["cluster", "create", "--tag", "a=b", "--wait", "--interval", "0.01"],
        ["cluster", "list"], ["cluster", "show", cid], ["cluster", "tag", cid, "x=y"], ["cluster", "untag", cid, "x"],
        ["cluster", "policy", "put", cid, str(pf)], ["cluster", "policy", "get", cid],
        ["cluster", "policy", "delete", cid, "--yes"], ["cluster", "streams", "list", cid],
        ["cluster", "update", cid, "--no-deletion-protection"], ["cluster", "wait", cid, "--interval", "0.01"],
        ["cluster", "show", "abcdefghijklmnopqrstuvwxyz"],  # an error path too
        ["cluster", "delete", cid, "--yes", "--wait", "--interval", "0.01"],
        ["config", "show"],
    ]
    debug_lines = 0
    for args in commands:
        r = run(["--debug", *args])
        both = r.stdout + r.stderr
        for bad in FORBIDDEN:
            assert bad not in both, (args, bad)
        debug_lines += r.stderr.count(" DEBUG dsqlops.")
    assert debug_lines >= 5  # --debug really logged something, so the check above means something
