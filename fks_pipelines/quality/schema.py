"""Schema validity of a canonical OHLCV frame, summarised for an asset check.

:func:`check_schema` runs the pandera model :class:`~fks_pipelines.market.frame.OHLCVFrame`
lazily (every failure, not the first) and adds what the model cannot say on its own:

- ``ts_unique``: no bar repeats an earlier row's ``(provider, symbol, interval, ts)``. This is the
  model's key uniqueness, evaluated here instead of by pandera (sorting once is cheaper than
  pandera's ``duplicated`` over four columns, and the failure is not counted twice);
- ``ts_increasing``: within each ``(provider, symbol, interval)`` series, no row is earlier than
  the row before it (together with ``ts_unique``: ``ts`` strictly increases per series);
- ``ts_on_grid``: every ``ts`` is a multiple of the interval since the epoch (bars open on the
  interval's UTC grid; daily bars at 00:00 UTC);
- ``ts_utc``: ``ts`` is timezone-aware UTC (a naive or other-zone column is one frame-level case);
- ``interval_matches``: the ``interval`` column names the interval being checked.

A broken frame (missing column, wrong dtype, a check that cannot even run) gives a failing
report, never an exception, so that the asset check can show what is wrong.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fks_pipelines.market.intervals import Interval

if TYPE_CHECKING:
    import pandera.pandas as pa

SERIES_KEYS = ("provider", "symbol", "interval")
MAX_EXAMPLES = 5

NAT_NANOS = np.iinfo(np.int64).min  # what ts_nanos gives NaT
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "utc", "tzutc()", "UTC+00:00"})
# Names of pandera's built-in checks as they appear in ``failure_cases["check"]``, mapped to the
# names this report uses; ``{column}`` is filled with the failing column.
_PANDERA_NAMES = {
    "not_nullable": "not_null",
    "greater_than(0)": "{column}_positive",
    "greater_than_or_equal_to(0)": "{column}_non_negative",
    "column_in_dataframe": "column_present",
    "column_in_schema": "column_expected",
    "column_ordered": "column_order",
    "multiple_fields_uniqueness": "ts_unique",
}


@dataclass(frozen=True)
class SchemaReport:
    """The outcome of :func:`check_schema`.

    Attributes:
        rows: Rows in the frame.
        passed: True when no check failed.
        failures: Failing rows plus frame-level cases (a missing column, a wrong dtype, a check
            that could not run): the number of things to fix.
        failing_rows: Distinct rows failing at least one row-level check.
        checks: Check name -> failing rows (frame-level cases count 1), only checks that failed,
            e.g. ``{"high_is_highest": 3, "ts_on_grid": 1}``.
        examples: At most :data:`MAX_EXAMPLES` failures, JSON-able: frame-level cases first
            (``{"checks": [...], "column": ..., "detail": ...}``), then failing rows in frame
            order (``{"checks": [...], "row": <position>, "ts": <ISO>, "open": ..., ...}``).
    """

    rows: int
    passed: bool
    failures: int
    failing_rows: int
    checks: dict[str, int]
    examples: list[dict[str, object]] = field(default_factory=list)

    def as_metadata(self) -> dict[str, object]:
        """Flat metadata (plain ``bool``/``int``, and the examples as a JSON-able list).

        Failed checks appear as ``schema_check_<name>``; passing checks are left out.
        """
        metadata: dict[str, object] = {
            "schema_passed": self.passed,
            "schema_rows": self.rows,
            "schema_failures": self.failures,
            "schema_failing_rows": self.failing_rows,
        }
        metadata.update({f"schema_check_{name}": count for name, count in self.checks.items()})
        if self.examples:
            metadata["schema_examples"] = self.examples
        return metadata


def series_codes(frame: pd.DataFrame, keys: Sequence[str] = SERIES_KEYS) -> np.ndarray:
    """Dense ``int64`` codes of each row's series (``0..n_series-1``, in order of appearance).

    Keys missing from ``frame`` are ignored, so a frame without ``provider`` is grouped by
    ``symbol`` and ``interval`` alone; a null key is a value of its own.
    """
    codes = np.zeros(len(frame), dtype=np.int64)
    for key in keys:
        if key not in frame.columns:
            continue
        # use_na_sentinel=False: a null key is a group, not -1 colliding with another code.
        column, uniques = pd.factorize(frame[key], use_na_sentinel=False)
        if len(uniques) > 1:
            codes = codes * len(uniques) + column
    if len(codes) and codes.max() > 0:
        codes = pd.factorize(codes)[0].astype(np.int64)
    return codes


def ts_nanos(ts: pd.Series) -> np.ndarray | None:
    """Epoch nanoseconds of a datetime column (``NaT`` -> int64 minimum); None if not datetime.

    A naive column is read as UTC (``ts_utc`` reports it separately).
    """
    if not pd.api.types.is_datetime64_any_dtype(ts.dtype):
        return None
    values = ts.array
    if getattr(values, "unit", "ns") != "ns":
        values = values.as_unit("ns")
    return np.asarray(values.asi8, dtype=np.int64)


def series_order(codes: np.ndarray, nanos: np.ndarray) -> np.ndarray:
    """Positions putting rows in (series, ts) order. Canonical frames arrive sorted, so the
    order is checked first and the sort (0.1 s per million rows) done only when needed."""
    ordered = (np.diff(codes) > 0) | ((np.diff(codes) == 0) & (np.diff(nanos) >= 0))
    return np.arange(len(codes)) if ordered.all() else np.lexsort((nanos, codes))


def check_schema(frame: pd.DataFrame, interval: Interval) -> SchemaReport:
    """Validate a canonical OHLCV frame and count failures per named check.

    Args:
        frame: Bars, ideally in the canonical shape of :mod:`fks_pipelines.market.frame`; any
            index (rows are identified by position).
        interval: The interval the bars are meant to have; sets the ``ts`` grid.

    Returns:
        A :class:`SchemaReport`; ``passed`` is False when any check failed.
    """
    frame = frame.reset_index(drop=True)
    n = len(frame)
    row_checks: dict[str, np.ndarray] = {}  # check -> sorted failing positions
    cases: dict[str, list[dict[str, object]]] = {}  # check -> frame-level cases

    _run_pandera(frame, row_checks, cases)
    _check_ts(frame, interval, row_checks, cases)
    if "interval" in frame.columns:
        wrong = (frame["interval"] != interval.name).fillna(True).to_numpy(dtype=bool)
        _add_rows(row_checks, "interval_matches", np.flatnonzero(wrong))

    failing = np.zeros(n, dtype=bool)
    for positions in row_checks.values():
        failing[positions] = True
    failing_rows = int(failing.sum())
    counts = {name: len(positions) for name, positions in row_checks.items() if len(positions)}
    for name, found in cases.items():
        counts[name] = counts.get(name, 0) + len(found)
    frame_cases = sum(len(found) for found in cases.values())

    return SchemaReport(
        rows=n,
        passed=not counts,
        failures=failing_rows + frame_cases,
        failing_rows=failing_rows,
        checks=dict(sorted(counts.items())),
        examples=_examples(frame, row_checks, cases),
    )


@functools.cache
def _schema() -> pa.DataFrameSchema:
    # The model, and pandera with it, is imported on the first check rather than with this
    # module: loading the code location imports the checks without running one (about 0.1 s).
    from fks_pipelines.market.frame_model import OHLCVFrame

    # Key uniqueness is checked as ts_unique by _check_ts (see the module docstring).
    schema = copy.deepcopy(OHLCVFrame.to_schema())
    schema.unique = None
    return schema


def _run_pandera(
    frame: pd.DataFrame,
    row_checks: dict[str, np.ndarray],
    cases: dict[str, list[dict[str, object]]],
) -> None:
    schema = _schema()
    from pandera.errors import SchemaErrors  # loaded by _schema(), see there

    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        failures = exc.failure_cases
    except Exception as exc:  # a frame so broken that pandera itself gives up
        cases.setdefault("pandera", []).append({"detail": _short(repr(exc))})
        return
    else:
        return

    # failure_cases holds one row per failing cell (a dataframe check lists every column of
    # each failing row): name each distinct (check, column) once, never per failure case.
    check_codes, checks = pd.factorize(failures["check"])
    column_codes, columns = pd.factorize(failures["column"], use_na_sentinel=False)
    pair_codes, distinct = pd.factorize(check_codes * len(columns) + column_codes)
    pair_names = np.asarray(
        [
            _check_name(str(checks[c // len(columns)]), _column_name(columns[c % len(columns)]))
            for c in distinct.tolist()
        ],
        dtype=object,
    )
    index = pd.to_numeric(failures["index"], errors="coerce").to_numpy(dtype="float64")
    located = ~np.isnan(index)
    by_name = pd.Series(index[located]).groupby(pair_names[pair_codes[located]], sort=False)
    for name, rows in by_name:
        failing = np.zeros(len(frame), dtype=bool)  # a mask sorts and dedups in O(n)
        failing[rows.to_numpy(dtype=np.int64)] = True
        _add_rows(row_checks, str(name), np.flatnonzero(failing))

    # Frame-level cases (a missing column, a wrong dtype, a check that raised) have no row.
    unlocated = ~located
    for name, column, detail in zip(
        pair_names[pair_codes[unlocated]],
        failures["column"].to_numpy()[unlocated],
        failures["failure_case"].to_numpy()[unlocated],
        strict=True,
    ):
        if name in ("column_present", "column_expected"):
            column = detail  # pandera names the schema as the column, the column as the case
        elif pd.isna(column) or column == _schema().name:
            column = None  # a dataframe-level check
        case = {"column": None if column is None else str(column), "detail": _short(str(detail))}
        cases.setdefault(str(name), []).append(case)


def _column_name(column: object) -> str | None:
    return None if pd.isna(column) else str(column)  # type: ignore[arg-type]


def _check_name(check: str, column: str | None) -> str:
    if check.startswith("dtype("):
        return "dtype"
    template = _PANDERA_NAMES.get(check)
    if template is None:
        # A custom check (high_is_highest) keeps its name; anything else becomes snake_case.
        return re.sub(r"[^0-9a-zA-Z]+", "_", check).strip("_").lower() or "unknown"
    return template.format(column=column or "frame")


def _check_ts(
    frame: pd.DataFrame,
    interval: Interval,
    row_checks: dict[str, np.ndarray],
    cases: dict[str, list[dict[str, object]]],
) -> None:
    if "ts" not in frame.columns:
        return  # pandera reports the missing column
    ts = frame["ts"]
    tz = getattr(ts.dtype, "tz", None)
    if tz is None or str(tz) not in _UTC_NAMES:
        cases.setdefault("ts_utc", []).append(
            {"column": "ts", "detail": f"ts must be timezone-aware UTC, got {ts.dtype}"}
        )
    nanos = ts_nanos(ts)
    if nanos is None:
        return  # not datetimes at all: the dtype case says so

    valid = np.flatnonzero(nanos != NAT_NANOS)  # NaT is pandera's not_null
    stamps = nanos[valid]
    off_grid = valid[stamps % (interval.seconds * 1_000_000_000) != 0]
    _add_rows(row_checks, "ts_on_grid", off_grid)

    codes = series_codes(frame)[valid]
    # Rows of each series in frame order: a stable sort by series keeps that order within it.
    if len(codes) and (np.diff(codes) < 0).any():
        by_series = np.argsort(codes, kind="stable")
    else:
        by_series = np.arange(len(codes))
    c, t = codes[by_series], stamps[by_series]
    same = c[1:] == c[:-1]
    earlier = np.flatnonzero(same & (t[1:] < t[:-1])) + 1
    _add_rows(row_checks, "ts_increasing", np.sort(valid[by_series[earlier]]))

    if len(earlier):  # out of order: repeats need not be neighbours
        order = np.lexsort((t, c))
        by_series, c, t = by_series[order], c[order], t[order]
        same = c[1:] == c[:-1]
    repeats = np.flatnonzero(same & (t[1:] == t[:-1])) + 1
    _add_rows(row_checks, "ts_unique", np.sort(valid[by_series[repeats]]))


def _add_rows(row_checks: dict[str, np.ndarray], name: str, positions: np.ndarray) -> None:
    """Record failing ``positions`` (sorted, distinct) under check ``name``."""
    if not len(positions):
        return
    if name in row_checks:
        positions = np.union1d(row_checks[name], positions)
    row_checks[name] = positions


def _examples(
    frame: pd.DataFrame,
    row_checks: dict[str, np.ndarray],
    cases: dict[str, list[dict[str, object]]],
) -> list[dict[str, object]]:
    examples: list[dict[str, object]] = []
    for name, found in sorted(cases.items()):
        for case in found:
            if len(examples) < MAX_EXAMPLES:
                examples.append({"checks": [name], **case})
    room = MAX_EXAMPLES - len(examples)
    if room <= 0 or not row_checks:
        return examples
    # The first failing rows in frame order: each check's first few, merged.
    candidates = np.unique(np.concatenate([p[:room] for p in row_checks.values()]))[:room]
    for position in candidates.tolist():
        failed = sorted(
            name for name, positions in row_checks.items() if _contains(positions, position)
        )
        row = frame.iloc[position]
        example: dict[str, object] = {"checks": failed, "row": position}
        example.update({column: _plain(row[column]) for column in frame.columns})
        examples.append(example)
    return examples


def _contains(sorted_positions: np.ndarray, position: int) -> bool:
    at = int(np.searchsorted(sorted_positions, position))
    return at < len(sorted_positions) and int(sorted_positions[at]) == position


def _plain(value: object) -> object:
    """A JSON-able Python value: ISO strings for times, None for missing values."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:  # NaN
        return None
    try:
        if pd.isna(value):  # type: ignore[arg-type]
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
