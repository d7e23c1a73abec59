"""Content hashes: the shared encoder makes exactly what json.dumps made (digests persist)."""

import json

from hypothesis import given
from hypothesis import strategies as st

from fleet.hashing import canonical, digest

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(values)
def test_canonical_is_sorted_compact_json_as_json_dumps_writes_it(value):
    assert canonical(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def test_a_digest_does_not_depend_on_key_order():
    assert digest({"a": 1, "b": [2]}) == digest({"b": [2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})
