"""The quantity patterns: what the OpenAPI schema allows is exactly what the API takes (no zero that a
validator refuses later)."""

from __future__ import annotations

import itertools
import re

import pytest

from services.api.quantities import CPU_PATTERN, MEMORY_PATTERN, quantity


def test_every_cpu_or_memory_the_patterns_allow_is_above_zero():
    alphabet = "0123456789.mKiG"
    for n in range(1, 5):
        for chars in itertools.product(alphabet, repeat=n):
            text = "".join(chars)
            for pattern in (CPU_PATTERN, MEMORY_PATTERN):
                if re.fullmatch(pattern, text):
                    assert quantity(text) > 0, (pattern, text)


@pytest.mark.parametrize("text, value", [("2", 2), ("0.5", 0.5), ("0.25", 0.25), ("500m", 0.5), ("1.5", 1.5)])
def test_the_cpu_forms_people_write(text, value):
    assert re.fullmatch(CPU_PATTERN, text) and quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text, value", [("512Mi", 512 * 2**20), ("4Gi", 4 * 2**30), ("1G", 10**9),
                                         ("0.5Gi", 2**29), ("1000", 1000)])
def test_the_memory_forms_people_write(text, value):
    assert re.fullmatch(MEMORY_PATTERN, text) and quantity(text) == value


@pytest.mark.parametrize("text", ["0", "0.0", "0m", "000", "0Gi", "0.000Mi", "-1", "1.2345", "1 Gi", ""])
def test_zero_and_odd_forms_are_outside_the_patterns(text):
    assert not re.fullmatch(CPU_PATTERN, text) and not re.fullmatch(MEMORY_PATTERN, text)
