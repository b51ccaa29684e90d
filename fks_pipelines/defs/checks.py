"""Asset checks of the OHLCV assets, computed inside the run that stores the bars.

Each provider asset declares three checks: ``schema`` (blocking, ERROR: nothing is stored when it
fails), ``outliers`` (high severity ERROR, medium WARN) and ``completeness`` (WARN). The
consolidated assets declare ``agreement`` (beyond the asset class's warn tolerance WARN, beyond
its hard limit ERROR). The measures come from :mod:`fks_pipelines.quality`; this module turns them
into Dagster check results.

A run may cover a range of partitions (a backfill). Dagster records one evaluation per check and
run (partitioned check results are a preview API whose range runs record no partition), so each
evaluation covers its run's partitions and names the ones that failed in its metadata; each
partition's own figures and quality score are on its materialisation.
"""

from collections.abc import Iterable, Mapping, Sequence

import dagster as dg

from fks_pipelines.quality.agreement import Agreement
from fks_pipelines.quality.completeness import CompletenessReport
from fks_pipelines.quality.outliers import OutlierResult
from fks_pipelines.quality.schema import SchemaReport

SCHEMA = "schema"
OUTLIERS = "outliers"
COMPLETENESS = "completeness"
AGREEMENT = "agreement"
MAX_LISTED = 10  # failing partitions named in a check's metadata

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN


def provider_check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            SCHEMA,
            asset=key,
            blocking=True,
            description=(
                "The pandera model (types, no nulls, high >= max(open, close), low <= "
                "min(open, close), volume >= 0) plus unique, increasing, on-grid UTC open "
                "times. Checked before writing: a failing run stores nothing, and the "
                "consolidated series never reads the bad bars. Shows a few failing rows."
            ),
        ),
        dg.AssetCheckSpec(
            OUTLIERS,
            asset=key,
            description=(
                "Close returns and log volume against a rolling robust (MAD) baseline of the "
                "bars before them, stored history included: high severity fails as ERROR, "
                "medium as WARN."
            ),
        ),
        dg.AssetCheckSpec(
            COMPLETENESS,
            asset=key,
            description=(
                "Expected bars from the interval grid and the instrument's exchange calendar "
                "(24/7 for crypto, sessions and half days for equities): missing bars, "
                "duplicates, bars stored while still open, and stale runs of one close. WARN."
            ),
        ),
    ]


def consolidated_check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            AGREEMENT,
            asset=key,
            description=(
                "Where providers cover the same bar, their closes against the chosen one: bars "
                "beyond the asset class's warn tolerance fail as WARN, any beyond its hard "
                "limit (error_bps) as ERROR."
            ),
        )
    ]


def schema_result(report: SchemaReport, partitions: Sequence[str]) -> dg.AssetCheckResult:
    metadata = {**report.as_metadata(), "partitions_checked": len(partitions)}
    if report.passed:
        return dg.AssetCheckResult(check_name=SCHEMA, passed=True, metadata=metadata)
    return dg.AssetCheckResult(
        check_name=SCHEMA,
        passed=False,
        severity=ERROR,
        description=schema_failure(report),
        metadata={**metadata, "partitions": _listed(partitions)},
    )


def schema_failure(report: SchemaReport) -> str:
    failed = ", ".join(f"{name} ({count})" for name, count in sorted(report.checks.items()))
    return f"{report.failures} schema failures in {report.rows} rows: {failed}; nothing stored"


def outliers_result(results: Iterable[OutlierResult]) -> dg.AssetCheckResult:
    results = list(results)
    metadata: dict[str, object] = {}
    fields: dict[str, list[OutlierResult]] = {}
    for result in results:
        fields.setdefault(result.field, []).append(result)
    worst = "none"
    for name, of_field in fields.items():
        count = sum(r.count for r in of_field)
        severity = max((r.severity for r in of_field), key=_SEVERITY_ORDER.index)
        worst = max(worst, severity, key=_SEVERITY_ORDER.index)
        metadata[f"outliers_{name}_count"] = count
        metadata[f"outliers_{name}_severity"] = severity
        scores = [r.max_score for r in of_field if r.max_score is not None]
        if scores:
            metadata[f"outliers_{name}_max_score"] = max(scores)
        examples = [e for r in of_field for e in r.examples]
        if examples:
            metadata[f"outliers_{name}_examples"] = examples[:MAX_LISTED]
    if worst in ("high", "medium"):
        return dg.AssetCheckResult(
            check_name=OUTLIERS,
            passed=False,
            severity=ERROR if worst == "high" else WARN,
            description=f"{worst}-severity outliers",
            metadata=metadata,
        )
    return dg.AssetCheckResult(check_name=OUTLIERS, passed=True, metadata=metadata)


_SEVERITY_ORDER = ["none", "low", "medium", "high"]


def completeness_result(reports: Mapping[str, CompletenessReport]) -> dg.AssetCheckResult:
    """One result for the run: ``reports`` maps each partition key to its report."""
    incomplete = [
        key
        for key, r in reports.items()
        if r.missing or r.duplicates or r.open_bars or r.stale_runs
    ]
    expected = sum(r.expected for r in reports.values())
    present = sum(r.expected - r.missing for r in reports.values())
    metadata: dict[str, object] = {
        "partitions_checked": len(reports),
        "partitions_incomplete": len(incomplete),
        "bars_expected": expected,
        "bars_missing": sum(r.missing for r in reports.values()),
        "bars_duplicated": sum(r.duplicates for r in reports.values()),
        "bars_open": sum(r.open_bars for r in reports.values()),
        "stale_runs": sum(r.stale_runs for r in reports.values()),
        "completeness_ratio": present / expected if expected else 1.0,
    }
    if not incomplete:
        return dg.AssetCheckResult(check_name=COMPLETENESS, passed=True, metadata=metadata)
    examples = [e for key in incomplete[:MAX_LISTED] for e in reports[key].missing_examples[:2]]
    return dg.AssetCheckResult(
        check_name=COMPLETENESS,
        passed=False,
        severity=WARN,
        description=f"{len(incomplete)} of {len(reports)} partitions incomplete",
        metadata={
            **metadata,
            "incomplete_partitions": _listed(incomplete),
            "missing_examples": examples[:MAX_LISTED],
        },
    )


def agreement_result(agreements: Mapping[str, tuple[Agreement, float]]) -> dg.AssetCheckResult:
    """Per partition key: its agreement and its hard limit in basis points."""
    compared = {k: a for k, (a, _) in agreements.items() if a.compared}
    beyond = [k for k, a in compared.items() if a.beyond_tolerance]
    hard = [k for k, (a, error_bps) in agreements.items() if (a.max_abs_dev_bps or 0.0) > error_bps]
    maxima = [a.max_abs_dev_bps for a in compared.values() if a.max_abs_dev_bps is not None]
    metadata: dict[str, object] = {
        "partitions_checked": len(agreements),
        "partitions_compared": len(compared),
        "partitions_beyond_tolerance": len(beyond),
        "partitions_beyond_hard_limit": len(hard),
        "bars_beyond_tolerance": sum(a.beyond_tolerance for a in compared.values()),
    }
    if maxima:
        metadata["agreement_max_bps"] = max(maxima)
    if not beyond and not hard:
        return dg.AssetCheckResult(check_name=AGREEMENT, passed=True, metadata=metadata)
    failing = hard or beyond
    return dg.AssetCheckResult(
        check_name=AGREEMENT,
        passed=False,
        severity=ERROR if hard else WARN,
        description=(
            f"providers disagree beyond the hard limit in {len(hard)} partitions"
            if hard
            else f"providers disagree beyond tolerance in {len(beyond)} partitions"
        ),
        metadata={**metadata, "failing_partitions": _listed(failing)},
    )


def _listed(keys: Sequence[str]) -> list[str]:
    keys = [str(k) for k in keys]
    return (
        keys
        if len(keys) <= MAX_LISTED
        else [*keys[:MAX_LISTED], f"... {len(keys) - MAX_LISTED} more"]
    )
