"""The package imports its own modules directly: a broken module must fail loudly, not turn into a
warning or a silently smaller feature set. Only third-party optional imports may be guarded."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dsqlops

PACKAGE = Path(dsqlops.__file__).resolve().parent
_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in _IMPORT_ERRORS for n in names)


def _imports_own_module(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.ImportFrom) and (sub.level > 0 or (sub.module or "").split(".")[0] == "dsqlops"):
            return True
        if isinstance(sub, ast.Import) and any(a.name.split(".")[0] == "dsqlops" for a in sub.names):
            return True
        if isinstance(sub, ast.Call):
            # importlib.import_module(name) and the like: in this package they load our own modules
            func = sub.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                return True
    return False


def guarded_own_imports(source: str) -> list[int]:
    """Lines of ``try`` blocks that import one of our modules and catch ImportError."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            if any(_imports_own_module(stmt) for stmt in node.body):
                out.append(node.lineno)
    return out


def test_the_detector_sees_guarded_own_imports() -> None:
    assert guarded_own_imports("try:\n    from dsqlops.cost import pricing\nexcept ImportError:\n    pass\n") == [1]
    assert guarded_own_imports("try:\n    import importlib\n    m = importlib.import_module(name)\n"
                               "except (ValueError, ImportError):\n    m = None\n") == [1]
    assert guarded_own_imports("try:\n    from . import x\nexcept ImportError:\n    x = None\n") == [1]
    assert guarded_own_imports("try:\n    import certifi\nexcept ImportError:\n    pass\n") == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_error_fallback_between_our_modules(path: Path) -> None:
    lines = guarded_own_imports(path.read_text(encoding="utf-8"))
    assert lines == [], f"{path.relative_to(PACKAGE)} lines {lines}: a failing import of our own module is caught"
