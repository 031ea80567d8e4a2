"""Kubernetes quantities of CPU and memory, restricted to the positive forms people write ("2", "500m", "4Gi")."""

from __future__ import annotations

import re
from decimal import Decimal

# A positive decimal of at most 3 places and no leading zeros: "2", "1.5", "0.25", never "0" or "0.000".
_POSITIVE = r"([1-9][0-9]{0,%d}(\.[0-9]{1,3})?|0\.(00[1-9]|0[1-9][0-9]?|[1-9][0-9]{0,2}))"
CPU_PATTERN = rf"^({_POSITIVE % 5}|[1-9][0-9]{{0,8}}m)$"
MEMORY_PATTERN = rf"^{_POSITIVE % 11}(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
_SCALE = {"": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
          "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(text: str) -> Decimal:
    """The value of a quantity that matched CPU_PATTERN or MEMORY_PATTERN ("500m" -> 0.5, "1Ki" -> 1024)."""
    number, suffix = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text).groups()
    return Decimal(number) * _SCALE[suffix]
