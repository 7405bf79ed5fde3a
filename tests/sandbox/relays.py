"""Run a test module against both front relays: the C data path and the pure-Python one.

    from tests.sandbox.relays import both_relays
    sandbox = both_relays()   # overrides the session fixture for this module, parametrized

With the C extension built, each test runs once per relay (ids ``relay=native``/``relay=python``);
without it, or with ``DSQLOPS_SANDBOX_RELAY=python`` set, only the Python relay exists.
"""

from __future__ import annotations

from typing import Any

import pytest

from dsqlops.sandbox import native


def relays() -> list[str]:
    return ["native", "python"] if native.relay_kind() == "native" else ["python"]


def both_relays() -> Any:
    @pytest.fixture(scope="module", params=relays(), ids=lambda r: f"relay={r}")
    def sandbox(request: pytest.FixtureRequest, sandbox: Any) -> Any:
        if request.param == "python" and len(relays()) > 1:
            py = request.getfixturevalue("sandbox_python")
            assert py.runtime().get("relay") == "python"
            return py
        assert sandbox.runtime().get("relay") == request.param
        return sandbox

    return sandbox
