"""The fuzzing harness itself: a failure must be reproducible from its report."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.harness import FUZZ


def test_a_failing_example_is_reported_with_its_values() -> None:
    # Blank without tests/fuzz/conftest.py, once schemathesis is imported.
    @FUZZ
    @given(value=st.just(12345))
    def fails(value: int) -> None:
        assert value != 12345

    with pytest.raises(AssertionError) as raised:
        fails()
    assert "value=12345" in "\n".join(getattr(raised.value, "__notes__", []))
