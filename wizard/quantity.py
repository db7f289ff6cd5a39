"""Kubernetes resource quantities: parse what users type, write what Kubernetes accepts.

Users write ``256GB``, ``16Gi``, ``16`` or ``500m``; manifests need a Kubernetes quantity.
Memory given as a bare number is read as GiB; ``GB``/``MB``/``TB`` are read as the SI units
Kubernetes spells ``G``/``M``/``T``.
"""

from __future__ import annotations

import re

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
_DECIMAL = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
_USER_ALIASES = {"KB": "k", "MB": "M", "GB": "G", "TB": "T", "PB": "P",
                 "KiB": "Ki", "MiB": "Mi", "GiB": "Gi", "TiB": "Ti", "PiB": "Pi"}
_MEM_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_CPU_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m?)\s*$")


def memory(value: object) -> str:
    """Normalise a memory size to a Kubernetes quantity; raise ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 16Gi or 512Mi")
    if isinstance(value, (int, float)):
        value = f"{value}Gi"
    if not isinstance(value, str):
        raise ValueError("expected a size such as 16Gi or 512Mi")
    m = _MEM_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a size; write it like 16Gi, 512Mi or 256GB")
    number, unit = m.groups()
    unit = _USER_ALIASES.get(unit, unit)
    if unit not in _BINARY and unit not in _DECIMAL:
        raise ValueError(f"{value!r} has an unknown unit {m.group(2)!r}; use Mi, Gi, Ti (or MB, GB, TB)")
    if unit == "":
        unit = "Gi"  # a bare number of memory is GiB, never bytes
    if float(number) <= 0:
        raise ValueError(f"{value!r} must be greater than zero")
    if "." in number:
        # Kubernetes accepts decimals, but whole numbers of a smaller unit read better.
        smaller = {"Gi": "Mi", "Ti": "Gi", "G": "M", "T": "G"}.get(unit)
        scale = 1024 if unit in _BINARY else 1000
        if smaller and float(number) * scale == int(float(number) * scale):
            return f"{int(float(number) * scale)}{smaller}"
    return f"{number}{unit}"


def memory_bytes(quantity: str) -> int:
    """Bytes in a normalised memory quantity (output of :func:`memory`)."""
    m = _MEM_RE.match(quantity)
    if not m:
        raise ValueError(f"{quantity!r} is not a size")
    number, unit = m.groups()
    factor = _BINARY.get(unit) or _DECIMAL.get(unit)
    if factor is None:
        raise ValueError(f"{quantity!r} has an unknown unit")
    return int(float(number) * factor)


def gib(quantity: str) -> float:
    return memory_bytes(quantity) / 2**30


def cpu(value: object) -> str:
    """Normalise a CPU amount (``4``, ``0.5``, ``"500m"``) to a Kubernetes quantity."""
    if isinstance(value, bool):
        raise ValueError("expected a number of CPU cores such as 4 or 500m")
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("expected a number of CPU cores such as 4 or 500m")
    m = _CPU_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a CPU amount; write it like 4, 0.5 or 500m")
    number, milli = m.groups()
    if float(number) <= 0:
        raise ValueError(f"{value!r} must be greater than zero")
    if not milli and "." in number:
        millis = float(number) * 1000
        if millis != int(millis):
            raise ValueError(f"{value!r} is finer than a millicore")
        return f"{int(millis)}m" if millis % 1000 else str(int(millis) // 1000)
    return f"{number}{milli}"


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
