"""speedups/ (edge_gw_speedups): each C function gives what the pure-Python code it stands for gives.

`make test` installs the speedups (scripts/install-deps.sh), so these tests fail, not skip, without them."""

from __future__ import annotations

import enum
import math
import subprocess
import sys

import edge_gw_speedups
from hypothesis import given, settings
from hypothesis import strategies as st
from test_formats import df5_adverts

from cloud import dedup, lineproto
from cloud.formats import ruuvi_gateway as rg
from cloud.lineproto import EncodeError, Encoder
from cloud.model import FieldValue, Point


class Level(enum.IntEnum):
    LOW = 1


def test_installed_and_used() -> None:
    assert lineproto._c_line is edge_gw_speedups.line
    assert Encoder()._c_line is edge_gw_speedups.line
    assert Encoder(speedups=False)._c_line is None


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.booleans(),
    st.text(max_size=5),
    st.sampled_from([Level.LOW, -0.0, 0.0, 1e21, 5e-324, 2**63 - 1, -(2**63), 2**63]),
)
points = st.builds(
    Point,
    st.sampled_from(["ruuvi", "m x", "ü"]),
    st.dictionaries(st.sampled_from(["mac", "gateway", "a b", "ü"]), names, max_size=3),
    st.dictionaries(st.one_of(names, st.sampled_from(["temperature", "rssi", "x"])), values, max_size=6),
    st.integers(min_value=-(2**64), max_value=2**64),
)


def line_or_error(enc: Encoder, p: Point) -> str:
    try:
        return enc.line(p)
    except EncodeError as e:
        return f"error: {e}"


@settings(max_examples=3000, deadline=None)
@given(st.lists(points, min_size=1, max_size=4))
def test_same_bytes_as_pure_python(ps: list[Point]) -> None:
    # Each encoder sees the points twice: first the C line finds the keys unknown, then it has them.
    fast, pure = Encoder(), Encoder(speedups=False)
    for p in ps * 2:
        assert line_or_error(fast, p) == line_or_error(pure, p)


def test_what_the_c_line_hands_back() -> None:
    keys = {"x": "x", "k y": r"k\ y"}
    line = edge_gw_speedups.line
    assert line("m", {"x": 1.5, "k y": -3}, 7, keys, {}, 10) == r"m x=1.5,k\ y=-3i 7"
    assert line("m", {"x": True}, -1, keys, {}, 10) == "m x=true -1"
    for fields in ({}, {"x": math.nan}, {"x": math.inf}, {"x": "s"}, {"x": 2**63}, {"x": Level.LOW},
                   {"unknown": 1}, {"x": None}):
        assert line("m", fields, 7, keys, {}, 10) is None, fields
    assert line("m", {"x": 1}, 2**63, keys, {}, 10) is None


def test_float_texts_bounded_and_exact() -> None:
    floats: dict[float, str] = {}
    for v in [0.0, -0.0, 1.0, 0.1, 1e21, *(i / 200 for i in range(-50, 50))] * 2:
        assert edge_gw_speedups.line("m", {"x": v}, 0, {"x": "x"}, floats, 20) == f"m x={v!r} 0"
        assert len(floats) <= 20
    assert 0.0 not in floats and all(floats[k] == repr(k) for k in floats)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(
    df5_adverts(),
    df5_adverts().map(lambda s: s[:20] + " " + s[21:]),  # a space: fromhex() skips it
    df5_adverts().map(lambda s: s[:-2] + "é1"),
    df5_adverts().map(lambda s: s[:-1]),
    st.text(alphabet="0123456789abcdefABCDEFgx ", min_size=60, max_size=64),
    st.text(max_size=70),
))
def test_df5_fields_as_in_python(data: str) -> None:
    fast, pure = edge_gw_speedups.df5_fields(data), rg._df5_fields_py(data)
    assert fast == pure
    if fast is not None and pure is not None:
        assert list(fast) == list(pure)
        assert [type(v) for v in fast.values()] == [type(v) for v in pure.values()]
        assert all(repr(fast[k]) == repr(pure[k]) for k in fast)  # -0.0 too


def test_receiver_uses_the_c_code() -> None:
    assert rg._df5_fields is edge_gw_speedups.df5_fields
    assert dedup._c_fingerprint is edge_gw_speedups.fingerprint


field_values = st.one_of(st.floats(allow_nan=False), st.integers(-(2**70), 2**70), st.booleans(), st.text(max_size=3),
                         st.none())


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(st.sampled_from([*dedup.VALUE_FIELDS, "rssi", "x"]), field_values))
def test_fingerprint_as_in_python(fields: dict[str, FieldValue]) -> None:
    assert edge_gw_speedups.fingerprint(fields, dedup.VALUE_FIELDS) == dedup.fingerprint(fields)


KEEP_ARENAS = """
import edge_gw_speedups
assert edge_gw_speedups.keep_arenas(8) == 0
for _ in range(3):
    garbage = [(i, str(i)) for i in range(300_000)]  # some tens of MiB of small objects, in many arenas
    del garbage
    assert edge_gw_speedups.keep_arenas(8) == 8  # what emptied is kept, up to the count
assert edge_gw_speedups.keep_arenas(0) == 0
for count in (-1, 1025):
    try:
        edge_gw_speedups.keep_arenas(count)
    except ValueError as e:
        assert "0..1024" in str(e)
    else:
        raise AssertionError(count)
print("ok")
"""


def test_keep_arenas_keeps_and_gives_back() -> None:
    """Freed object arenas are kept up to the count, reused, and handed back when the count drops. In a process of
    its own: a long-lived heap has room enough in its half-used arenas that no arena empties."""
    out = subprocess.run([sys.executable, "-c", KEEP_ARENAS], check=False, capture_output=True, text=True,
                         timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (0, "ok\n", "")


class Key(str):
    def __hash__(self) -> int:
        return str.__hash__(self)


def test_a_key_that_is_not_a_plain_str_takes_the_python_path() -> None:
    assert edge_gw_speedups.line("m", {Key("x"): 1}, 7, {"x": "x"}, {}, 10) is None
    assert Encoder().line(Point("m", {}, {Key("x"): 1}, 7)) == "m x=1i 7"
