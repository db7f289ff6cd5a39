"""YAML writing that reads back exactly what was written, whatever text users typed.

PyYAML with ``allow_unicode`` may write NEL (U+0085) or the Unicode line and paragraph
separators raw inside a plain or single-quoted scalar, where a reader folds them into spaces.
Such strings are forced into double quotes, where they are escaped.
"""

from __future__ import annotations

from typing import Any

import yaml

_BREAKS = ("\x85", "\u2028", "\u2029")


class Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = '"' if any(b in value for b in _BREAKS) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _str)


def dump(value: Any, **kwargs: Any) -> str:
    kwargs.setdefault("allow_unicode", True)
    kwargs.setdefault("sort_keys", False)
    return yaml.dump(value, Dumper=Dumper, **kwargs)
