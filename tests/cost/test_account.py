"""The free tier's key: the AWS account behind the credentials, asked once per set of credentials."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import botocore.exceptions

from dsqlops.cost import collect


class FakeAws:
    def __init__(self, key: str, account: str | None, endpoint_url: str | None = None):
        self.key, self.account, self.endpoint_url, self.calls = key, account, endpoint_url, 0

    def credentials(self) -> Any:
        return SimpleNamespace(access_key=self.key)

    def client(self, service: str, region: str) -> Any:
        assert service == "sts"
        return self

    def get_caller_identity(self) -> dict[str, str]:
        self.calls += 1
        if self.account is None:
            raise botocore.exceptions.ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}},
                                                  "GetCallerIdentity")
        return {"Account": self.account, "Arn": "arn:aws:iam::x:user/y", "UserId": "z"}


def test_account_is_asked_once_per_credentials(monkeypatch):
    monkeypatch.setattr(collect, "_ACCOUNTS", {})
    warnings: list[str] = []
    one = FakeAws("AKIAONE", "111111111111")
    assert collect.account_of(one, "us-east-1", "prod", warnings) == "111111111111"
    assert collect.account_of(one, "us-east-2", "prod", warnings) == "111111111111"
    assert one.calls == 1
    # Same access key through another profile label: the cache answers (same account, same free tier).
    again = FakeAws("AKIAONE", "999999999999")
    assert collect.account_of(again, "us-east-1", "prod-readonly", warnings) == "111111111111"
    assert again.calls == 0
    two = FakeAws("AKIATWO", "222222222222")
    assert collect.account_of(two, "us-east-1", "dev", warnings) == "222222222222"
    assert warnings == []


def test_without_sts_the_profile_label_keys_the_free_tier_and_a_warning_says_so(monkeypatch):
    monkeypatch.setattr(collect, "_ACCOUNTS", {})
    warnings: list[str] = []
    denied = FakeAws("AKIADENIED", None)
    assert collect.account_of(denied, "us-east-1", "prod", warnings) == "prod"
    assert len(warnings) == 1 and "GetCallerIdentity" in warnings[0] and "'prod'" in warnings[0]


class DeniedDsql:
    def get_cluster(self, identifier: str) -> Any:
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}, "GetCluster")


def test_a_role_without_get_cluster_still_gets_its_cost_with_a_warning():
    warnings: list[str] = []
    t = collect._checked("111111111111", "us-east-1", "a" * 26, DeniedDsql(), explicit=True, warnings=warnings)
    assert t.exists and not t.explicit  # priced from CloudWatch, never reported missing
    assert "dsql:GetCluster" in warnings[0] and "AccessDeniedException" in warnings[0]
    probe = collect._checked("111111111111", "us-east-2", "a" * 26, DeniedDsql(), explicit=False, probe=True)
    assert not probe.exists  # a probed id without data there is then dropped, not shown as a ghost
