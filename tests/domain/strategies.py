"""Hypothesis strategies the domain tests share: arbitrary JSON, to put where a document
expects something else."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Any JSON scalar orjson round-trips: integers within 64 bits, finite floats.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)


def any_json(scalars: st.SearchStrategy[Any] = json_scalars) -> st.SearchStrategy[Any]:
    """Small JSON values (lists and objects nested a little) with leaves drawn from
    `scalars`."""
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=10,
    )
