"""A YAML loader for the files dsqlops reads (config, role files, price tables).

``yaml.safe_load`` is safe against code execution but not against size: an alias bomb (9 levels
of 9-fold aliases) expands to hundreds of millions of nodes, a self-referencing alias builds a
cyclic object that later code walks forever, and deep nesting (``[[[[…``) ends in a
``RecursionError`` inside the composer. None of dsqlops's files needs anchors or deep nesting, so
this loader refuses aliases outright and caps the nesting depth. It answers in time linear in the
file size, and its errors are ordinary ``yaml.YAMLError``s with a line mark, so every caller's
existing "file:line: problem" handling applies.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError

#: Far deeper than any real config/role/price file, far below the composer's recursion limit.
MAX_DEPTH = 64


class SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``) and nesting deeper than ``MAX_DEPTH``."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ComposerError(None, None, "YAML aliases (*name) are not supported in dsqlops files",
                                event.start_mark)
        if self._depth >= MAX_DEPTH:
            event = self.peek_event()
            raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load(text: str) -> Any:
    """Like ``yaml.safe_load`` for one document, with the limits above."""
    loader = SafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def compose(text: str) -> Any:
    """Like ``yaml.compose`` (node tree with line marks), with the limits above."""
    loader = SafeLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()
