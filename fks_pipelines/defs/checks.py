"""Asset checks of the OHLCV assets: one evaluation per check and partition, recorded by the run.

Each provider asset declares ``schema`` (blocking, ERROR: nothing is stored when it fails),
``outliers`` (high severity ERROR, medium WARN), ``completeness`` (WARN) and ``freshness``
(see :mod:`fks_pipelines.defs.freshness`). The consolidated assets declare ``schema``
(blocking), ``completeness`` and ``agreement`` (beyond the asset class's warn tolerance WARN,
beyond its hard limit ERROR, WARN when nothing could be compared). The measures come from
:mod:`fks_pipelines.quality`; this module turns them into Dagster check evaluations.

The checks are partitioned like their asset (Dagster 1.13's partitioned asset checks, a preview
API): a run over a range of partitions records one evaluation per partition, so which partition
failed which check, and how badly, stays on that partition after later runs of other partitions
pass. An ``AssetCheckResult`` cannot name its partition in a range run, so the asset body yields
``AssetCheckEvaluation`` events itself and then the checks' (empty) outputs, which is what
Dagster does with an ``AssetCheckResult`` (:func:`check_outputs`).
"""

from collections.abc import Generator, Iterator, Mapping, Sequence

import dagster as dg
import pandas as pd

# Not exported by dagster: the materialisation an evaluation judged (see ``selected``).
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster_shared.record import replace

from fks_pipelines.defs.partitions import Block, rows_by_partition
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Tolerance
from fks_pipelines.quality.agreement import Agreement
from fks_pipelines.quality.completeness import CompletenessReport
from fks_pipelines.quality.outliers import OutlierResult
from fks_pipelines.quality.schema import SchemaReport, check_schema

SCHEMA = "schema"
OUTLIERS = "outliers"
COMPLETENESS = "completeness"
AGREEMENT = "agreement"
FRESHNESS = "freshness"
MAX_LISTED = 10  # examples named in one evaluation's metadata

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
_SEVERITY_ORDER = ["none", "low", "medium", "high"]

SCHEMA_DESCRIPTION = (
    "The pandera model (types, no null prices, high >= max(open, close), low <= min(open, "
    "close), volume and quote_volume >= 0 where stated, a known bar_kind) plus unique, "
    "increasing, on-grid UTC open times. Checked before writing: a "
    "failing run stores nothing, and nothing downstream reads the bad bars. One evaluation per "
    "partition, with a few failing rows."
)
COMPLETENESS_DESCRIPTION = (
    "Expected bars from the interval grid and the instrument's exchange calendar (24/7 for "
    "crypto, sessions and half days for equities): missing bars, duplicates, bars stored while "
    "still open, and stale runs of one close. WARN. One evaluation per partition."
)


def provider_check_specs(
    key: dg.AssetKey, partitions_def: dg.PartitionsDefinition, freshness: str
) -> list[dg.AssetCheckSpec]:
    """The checks of a provider asset; ``freshness`` describes its freshness rule."""
    return _specs(
        key,
        partitions_def,
        {
            SCHEMA: SCHEMA_DESCRIPTION,
            OUTLIERS: OUTLIERS_DESCRIPTION,
            COMPLETENESS: COMPLETENESS_DESCRIPTION,
            FRESHNESS: freshness,
        },
    )


OUTLIERS_DESCRIPTION = (
    "Data errors, not market moves: each bar against the N bars before it (stored history "
    "included, read as bars) and the two bars after it, so the verdict is the same however the "
    "runs are cut. A close spike the next open reverts, a whole bar off both neighbours, a high "
    "or low far beyond the open, close and next open, a bar repeating the one before, a volume "
    "off its session type's level (half days, next to holidays) or 0. High severity fails as "
    "ERROR, medium as WARN. A partition's last bars are provisional until their two next bars "
    "arrive; the run that stores them records the final verdict on this partition."
)


def consolidated_check_specs(
    key: dg.AssetKey, partitions_def: dg.PartitionsDefinition
) -> list[dg.AssetCheckSpec]:
    return _specs(
        key,
        partitions_def,
        {
            SCHEMA: SCHEMA_DESCRIPTION,
            COMPLETENESS: COMPLETENESS_DESCRIPTION,
            OUTLIERS: (
                f"{OUTLIERS_DESCRIPTION} Here a close that a second provider matched (within "
                "the asset class's warn tolerance) moved with the market and is not an error; "
                "volumes of different providers are not comparable and are not judged."
            ),
            AGREEMENT: (
                "Where providers cover the same bar, their closes against the chosen one: bars "
                "beyond the asset class's warn tolerance fail as WARN, any beyond its hard "
                "limit (error_bps) as ERROR. A partition where no bar was covered by two "
                "providers fails as WARN: its bars are not verified."
            ),
        },
    )


def _specs(
    key: dg.AssetKey, partitions_def: dg.PartitionsDefinition, descriptions: Mapping[str, str]
) -> list[dg.AssetCheckSpec]:
    """Partitioned like the asset; the schema check blocks (nothing downstream reads bad bars)."""
    return [
        dg.AssetCheckSpec(
            name,
            asset=key,
            blocking=name == SCHEMA,
            partitions_def=partitions_def,
            description=description,
        )
        for name, description in descriptions.items()
    ]


def evaluation(
    key: dg.AssetKey,
    check: str,
    partition: str,
    *,
    failure: tuple[dg.AssetCheckSeverity, str] | None = None,
    description: str | None = None,
    metadata: Mapping[str, object] | None = None,
) -> dg.AssetCheckEvaluation:
    """One partition's evaluation: passed, or failed at ``failure``'s severity with its reason."""
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=check,
        passed=failure is None,
        severity=failure[0] if failure else ERROR,
        description=failure[1] if failure else description,
        metadata=dict(metadata or {}),
        blocking=check == SCHEMA,
        partition=str(partition),
    )


def schema_evaluations(
    key: dg.AssetKey, report: SchemaReport, rows_by_partition: Mapping[str, int]
) -> list[dg.AssetCheckEvaluation]:
    """The schema verdict of a block written (or refused) as a whole, for each of its partitions.

    A failing block stores nothing, so each of its partitions fails with the block's report.
    """
    if report.passed:
        return [
            evaluation(key, SCHEMA, p, description=f"{rows} rows valid", metadata={"rows": rows})
            for p, rows in rows_by_partition.items()
        ]
    failure = (ERROR, schema_failure(report))
    metadata = {**report.as_metadata(), "partitions_refused": len(rows_by_partition)}
    return [
        evaluation(key, SCHEMA, p, failure=failure, metadata=metadata) for p in rows_by_partition
    ]


def schema_gate(
    context: dg.AssetExecutionContext, what: str, frame: pd.DataFrame, bar: Interval, block: Block
) -> Generator[dg.AssetCheckEvaluation, None, tuple[SchemaReport, list[dg.AssetCheckEvaluation]]]:
    """Check a block's bars before they are written; returns the report and the block's
    (passing) schema evaluations, one per partition.

    A block that fails yields its failed evaluations (one per partition) and fails the run
    without retries: nothing of it is stored, and a retry would fetch the same bars.
    """
    schema = check_schema(frame, bar)
    found = schema_evaluations(context.asset_key, schema, rows_by_partition(frame, block))
    if not schema.passed:
        yield from selected(context, found)
        raise dg.Failure(description=f"{what}: {schema_failure(schema)}", allow_retries=False)
    return schema, found


def schema_failure(report: SchemaReport) -> str:
    failed = ", ".join(f"{name} ({count})" for name, count in sorted(report.checks.items()))
    return f"{report.failures} schema failures in {report.rows} rows: {failed}; nothing stored"


def worst_severity(results: Sequence[OutlierResult]) -> str:
    return max((r.severity for r in results), key=_SEVERITY_ORDER.index, default="none")


def outliers_evaluation(
    key: dg.AssetKey,
    partition: str,
    results: Sequence[OutlierResult],
    *,
    final: bool = True,
    confirmed: int | None = None,
) -> dg.AssetCheckEvaluation:
    """One partition's data errors, judged on its own bars (one result per detector).

    ``final`` is False while the partition's last bars lack their two next bars: the run that
    stores them records the final verdict on this partition. ``confirmed`` (consolidated series)
    counts the flags a second provider's matching close cleared.
    """
    metadata: dict[str, object] = {"verdict": "final" if final else "provisional"}
    if confirmed is not None:
        # Consolidated series: flags a second provider's matching close cleared.
        metadata["confirmed_by_second_provider"] = confirmed
    for result in results:
        metadata[f"outliers_{result.field}_count"] = result.count
        metadata[f"outliers_{result.field}_severity"] = result.severity
        if result.max_score is not None:
            metadata[f"outliers_{result.field}_max_score"] = result.max_score
        if result.examples:
            metadata[f"outliers_{result.field}_examples"] = result.examples[:MAX_LISTED]
    worst = worst_severity(results)
    if worst not in ("high", "medium"):
        scored = max((r.scored for r in results), default=0)
        note = "" if final else " (provisional until the next bars arrive)"
        return evaluation(
            key, OUTLIERS, partition, description=f"{scored} bars scored{note}", metadata=metadata
        )
    fields = ", ".join(
        f"{r.field} ({r.count}, worst score {r.max_score:.1f})"
        for r in results
        if r.severity == worst and r.max_score is not None
    )
    if not final:
        fields += " (provisional until the next bars arrive)"
    return evaluation(
        key,
        OUTLIERS,
        partition,
        failure=(ERROR if worst == "high" else WARN, f"{worst}-severity data errors: {fields}"),
        metadata=metadata,
    )


def completeness_evaluation(
    key: dg.AssetKey, partition: str, report: CompletenessReport
) -> dg.AssetCheckEvaluation:
    metadata = report.as_metadata()
    problems = [
        f"{count} {what}"
        for count, what in (
            (report.missing, "missing"),
            (report.duplicates, "duplicated"),
            (report.open_bars, "still open"),
            (report.stale_runs, "stale runs"),
        )
        if count
    ]
    if not problems:
        return evaluation(
            key,
            COMPLETENESS,
            partition,
            description=f"{report.present} of {report.expected} expected bars",
            metadata=metadata,
        )
    return evaluation(
        key,
        COMPLETENESS,
        partition,
        failure=(WARN, f"{', '.join(problems)} of {report.expected} expected bars"),
        metadata=metadata,
    )


def agreement_evaluation(
    key: dg.AssetKey, partition: str, agreement: Agreement, tolerance: Tolerance
) -> dg.AssetCheckEvaluation:
    """One consolidated partition's agreement; nothing compared is a WARN, not a pass."""
    metadata = {**agreement.as_metadata(), "agreement_error_bps": tolerance.error_bps}
    if not agreement.compared:
        sources = ", ".join(agreement.source_mix) or "no provider"
        reason = (
            f"not verified: no bar covered by two providers ({sources} stored these bars)"
            if agreement.bars
            else "not verified: no provider stored bars for this partition"
        )
        return evaluation(key, AGREEMENT, partition, failure=(WARN, reason), metadata=metadata)
    worst = agreement.max_abs_dev_bps or 0.0
    if worst > tolerance.error_bps:
        failure = (
            ERROR,
            f"providers disagree by up to {worst:.1f} bp, beyond the hard limit of "
            f"{tolerance.error_bps:g} bp",
        )
    elif agreement.beyond_tolerance:
        failure = (
            WARN,
            f"{agreement.beyond_tolerance} of {agreement.compared} compared bars beyond "
            f"{tolerance.warn_bps:g} bp (worst {worst:.1f} bp)",
        )
    else:
        return evaluation(
            key,
            AGREEMENT,
            partition,
            description=f"{agreement.compared} bars compared, worst {worst:.1f} bp",
            metadata=metadata,
        )
    return evaluation(key, AGREEMENT, partition, failure=failure, metadata=metadata)


def failed_checks(evaluations: Sequence[dg.AssetCheckEvaluation]) -> list[str]:
    """A partition's failed checks as ``check:SEVERITY``, e.g. ``outliers:ERROR``."""
    return [f"{e.check_name}:{e.severity.value}" for e in evaluations if not e.passed]


def failed_summary(evaluations: Sequence[dg.AssetCheckEvaluation]) -> str:
    """:func:`failed_checks` as a partition's metadata shows them: joined, or ``none``."""
    return ", ".join(failed_checks(evaluations)) or "none"


def selected(
    context: dg.AssetExecutionContext, evaluations: Sequence[dg.AssetCheckEvaluation]
) -> list[dg.AssetCheckEvaluation]:
    """``evaluations`` of the checks this run selected (the UI can launch an asset without them),
    each pointing at the materialisation of its partition that this run stored, if any.

    Dagster shows a partition's check result only while it targets the partition's latest
    materialisation; an ``AssetCheckResult`` gets that target from the step, an evaluation
    yielded per partition has to carry it. Yield them after the ``MaterializeResult``, whose
    materialisations are stored by then.
    """
    chosen = [e for e in evaluations if e.asset_check_key in context.selected_asset_check_keys]
    partitions = sorted({e.partition for e in chosen if e.partition is not None})
    if not partitions:
        return chosen
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=partitions),
        limit=len(partitions),
    ).records
    targets = {
        r.partition_key: AssetCheckEvaluationTargetMaterializationData(
            run_id=r.run_id, storage_id=r.storage_id, timestamp=r.timestamp
        )
        for r in records
        if r.run_id == context.run.run_id
    }
    # Partitions before the run (judged when their next bars arrived): their latest
    # materialisations, found in two queries whatever their number.
    earlier = set(partitions) - set(context.partition_keys)
    if earlier:
        latest = context.instance.event_log_storage.get_latest_storage_id_by_partition(
            context.asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, earlier
        )
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=context.asset_key, storage_ids=list(latest.values())),
            limit=max(len(latest), 1),
        ).records
        for r in records:
            targets[r.partition_key] = AssetCheckEvaluationTargetMaterializationData(
                run_id=r.run_id, storage_id=r.storage_id, timestamp=r.timestamp
            )
    return [
        replace(e, target_materialization_data=targets[e.partition])
        if e.partition in targets
        else e
        for e in chosen
    ]


def check_outputs(context: dg.AssetExecutionContext) -> Iterator[dg.Output]:
    """The (empty) outputs of the selected checks, once the body has yielded their evaluations."""
    selected = context.selected_asset_check_keys
    for name, spec in context.assets_def.check_specs_by_output_name.items():
        if spec.key in selected:
            yield dg.Output(None, output_name=name)
