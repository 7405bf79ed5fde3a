"""boto3 clients passed around dsqlops are typed with the boto3-stubs client types, not ``Any``,
so mypy checks every call's operation name, parameters and response keys."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import dsqlops

PACKAGE = Path(dsqlops.__file__).resolve().parent
#: Parameter names that carry a boto3 client in this code base.
_CLIENT_PARAM = re.compile(r"^(client|clients|cw|ce|sts|iam|sts_client|\w+_clients?)$")
_CLIENT_TYPES = re.compile(
    r"\b(AuroraDSQLClient|CloudWatchClient|PricingClient|STSClient|IAMClient|CostExplorerClient)\b")


def untyped_client_params(source: str) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for arg in [*node.args.args, *node.args.kwonlyargs]:
                if _CLIENT_PARAM.match(arg.arg) and arg.annotation is not None:
                    text = ast.unparse(arg.annotation)
                    if not _CLIENT_TYPES.search(text) and "Any" in text:
                        out.append(f"{node.name}({arg.arg}: {text})")
    return out


def test_the_check_sees_an_untyped_client() -> None:
    assert untyped_client_params("def f(client: Any, cw: 'CloudWatchClient') -> None: ...") == ["f(client: Any)"]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_boto3_clients_are_typed(path: Path) -> None:
    assert untyped_client_params(path.read_text(encoding="utf-8")) == []


def test_the_aws_context_hands_out_typed_clients() -> None:
    from dsqlops.aws import AwsContext

    for name, typ in [("dsql", "AuroraDSQLClient"), ("cloudwatch", "CloudWatchClient"), ("pricing", "PricingClient"),
                      ("sts", "STSClient"), ("iam", "IAMClient"), ("ce", "CostExplorerClient")]:
        assert getattr(AwsContext, name).__annotations__["return"] == typ
