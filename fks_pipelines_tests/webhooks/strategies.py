"""Hypothesis strategies of webhook bodies a sender could sign: near-valid events of the three
shapes (a field replaced, removed or added), events with times and numbers anywhere in their
ranges and beyond (the years 1-9999 at any offset, ``1e400``), and bodies that are not events.

Each strategy gives ``(route, raw body)``: the raw bytes, since numbers such as ``1e400`` have no
Python value that ``json.dumps`` writes as such.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

from fks_pipelines.webhooks.events import EXAMPLES, LATEST
from fks_pipelines_tests.webhooks.samples import BINANCE_DOCS_KLINE, GENERIC, POLYGON_DOCS_AM

YEAR_9999_MS = 253402300799999  # the Binance k.T: the last millisecond of 9999
_RAW_NUMBERS = ("N1e400", "N-1e400", "N1E+999", "N1e308", "N-0.0", "N1e-400")
"""Placeholders written as bare JSON numbers (without the N) in the raw body."""

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["\x00", "\ud800", "", "AM", "kline", "ohlcv.updated", "1h", *_RAW_NUMBERS]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)
_in_range_ms = st.integers(min_value=946_684_800_000, max_value=4_133_980_679_999)
millis = st.one_of(
    _in_range_ms,  # twice: most events are within range, to be stored
    _in_range_ms,
    st.integers(min_value=-(2**63), max_value=2**63),
    st.integers(min_value=940_000_000_000, max_value=4_140_000_000_000),  # near the edges
    st.sampled_from([0, 946684800000, 4133980799999, 4133980800000, YEAR_9999_MS]),
)
numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from(_RAW_NUMBERS),
)
times = st.one_of(
    st.builds(
        lambda moment, minutes: moment.replace(
            tzinfo=timezone(timedelta(minutes=minutes))
        ).isoformat(),
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
        st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
    ),
    st.datetimes(min_value=datetime(1999, 12, 1), max_value=datetime(2101, 2, 1)).map(
        lambda moment: moment.isoformat() + "Z"
    ),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59"]),
)


def raw(payload: object) -> bytes:
    """``payload`` as JSON, its number placeholders written as bare numbers."""
    text = json.dumps(payload)
    for placeholder in _RAW_NUMBERS:
        text = text.replace(f'"{placeholder}"', placeholder[1:])
    return text.encode()


def _mutated(example: object) -> st.SearchStrategy[object]:
    """``example`` with one top-level field replaced, removed or added: near-valid events."""
    event = example[0] if isinstance(example, list) else example
    assert isinstance(event, dict)
    fields = st.sampled_from([*event, "k", "extra"])
    replaced = st.builds(lambda key, value: {**event, key: value}, fields, json_values)
    removed = fields.map(lambda key: {k: v for k, v in event.items() if k != key})
    return replaced | removed | st.lists(replaced, min_size=1, max_size=3)


near_valid = st.sampled_from(sorted(EXAMPLES)).flatmap(
    lambda route: st.tuples(
        st.just(route),
        st.one_of((_mutated(EXAMPLES[route]) | json_values).map(raw), st.binary(max_size=64)),
    )
)
"""Near-valid events, other JSON, and bytes that are not JSON."""


@st.composite
def _ranged(draw: st.DrawFn) -> tuple[str, bytes]:
    route = draw(st.sampled_from(["binance", "polygon", "generic"]))
    if route == "binance":
        t = draw(millis)
        k = {**BINANCE_DOCS_KLINE["k"], "t": t}  # type: ignore[dict-item]
        k.update(
            T=draw(st.one_of(millis, st.just(t + 59_999))),
            o=str(draw(numbers)).lstrip("N"),  # a price as a string, as Binance sends them
            q=draw(numbers),
        )
        event: object = {**BINANCE_DOCS_KLINE, "E": draw(millis), "k": k}
    elif route == "polygon":
        s = draw(millis)
        one = {**POLYGON_DOCS_AM, "s": s, "e": draw(st.one_of(millis, st.just(s + 60_000)))}
        one.update(c=draw(numbers), vw=draw(numbers))
        event = draw(st.sampled_from([one, [POLYGON_DOCS_AM, one]]))
    else:
        event = {**GENERIC, "start": draw(times), "end": draw(times)}
    return route, raw(event)


ranged = _ranged()
"""Events of each shape with their times and numbers drawn from (and beyond) every range."""


@st.composite
def _valid(draw: st.DrawFn) -> tuple[str, bytes]:
    route = draw(st.sampled_from(["binance", "polygon", "generic"]))
    start = draw(_in_range_ms)
    price = draw(st.floats(min_value=0, max_value=1e9))
    if route == "binance":
        k = {**BINANCE_DOCS_KLINE["k"], "t": start, "T": start + 59_999}  # type: ignore[dict-item]
        k.update(o=repr(price), q=draw(numbers.filter(lambda n: n not in _RAW_NUMBERS[:3])))
        event: object = {**BINANCE_DOCS_KLINE, "E": start + 60_000, "k": k}
    elif route == "polygon":
        event = [{**POLYGON_DOCS_AM, "s": start, "e": start + 60_000, "vw": price}]
    else:
        first = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(milliseconds=start - 946_684_800_000)
        length = timedelta(minutes=draw(st.integers(min_value=1, max_value=60 * 24 * 30)))
        window = {"start": first.isoformat(), "end": min(first + length, LATEST).isoformat()}
        event = {**GENERIC, **window}
    return route, raw(event)


valid = _valid()
"""Events of each shape that are storable, with drawn times and numbers."""

signed_bodies = st.one_of(near_valid, ranged, valid)
"""Whatever a sender might sign."""
