"""``michelangelo-mlflow``: a thin command line over the public API.

``doctor`` runs :func:`preflight` (and optionally an artifact round trip), ``config``
prints :meth:`Settings.describe`, ``netpol`` prints the platform guide's egress
NetworkPolicy, ``sync`` replays what runs left in the spool. Every command shares one
error boundary (:class:`_Main`): an error of this SDK becomes one line on stderr,
``error: <what happened> -- fix: <what to do>``, and the exit code says which kind:

- ``0``: success;
- ``1``: a check failed, or records are still waiting in the spool;
- ``2``: a configuration or usage error (including a missing dependency).

Only ``click`` and the standard library are imported up front: ``--help`` never
imports MLflow, pydantic or requests; each command imports what it uses.
"""

from __future__ import annotations

import io
import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from michelangelo_mlflow.exceptions import (
    ConfigurationError,
    MichelangeloMlflowError,
    MissingDependencyError,
)

if TYPE_CHECKING:
    from michelangelo_mlflow._logging.replay import SyncResult
    from michelangelo_mlflow._preflight import CheckResult, PreflightReport
    from michelangelo_mlflow._settings import Settings

__all__ = ["EXIT_CONFIGURATION", "EXIT_FAILED", "main"]

EXIT_FAILED = 1
EXIT_CONFIGURATION = 2

_URI_HELP = "Tracking URI to use instead of MLFLOW_TRACKING_URI (credentials are redacted)."


class _Main(click.Group):
    """The one error boundary of every command: a library error is one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:  # MLflow (or a dependency of it) is not installed
            from michelangelo_mlflow._dependencies import missing_dependency

            ours = missing_dependency(exc)
            if ours is None:
                raise
            _fail(ours)
        except MichelangeloMlflowError as exc:
            _fail(exc)


def _fail(exc: MichelangeloMlflowError) -> None:
    fix = f" -- fix: {exc.fix}" if exc.fix else ""
    click.echo(f"error: {exc.message}{fix}", err=True)
    configuration = isinstance(exc, ConfigurationError | MissingDependencyError)
    raise SystemExit(EXIT_CONFIGURATION if configuration else EXIT_FAILED)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="michelangelo-mlflow", message="%(prog)s %(version)s")
def main() -> None:
    """Check and configure MLflow tracking for Michelangelo tasks."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for machines.")
@click.option(
    "--artifacts",
    is_flag=True,
    help="Also write a tiny artifact through the artifact store and read it back "
    "(creates and deletes one run).",
)
@click.option("--tracking-uri", default=None, metavar="URI", help=_URI_HELP)
def doctor(as_json: bool, artifacts: bool, tracking_uri: str | None) -> None:
    """Check reachability, credentials and versions, like the guide's verification step.

    Exit code 0 when every check passes, 1 when one fails, 2 for a configuration error.
    """
    from michelangelo_mlflow._preflight import artifact_round_trip, preflight
    from michelangelo_mlflow._settings import Settings

    with _reported_warnings() as notes:
        settings = Settings(tracking_uri=tracking_uri)
        report = preflight(settings, force=True)
        checks = list(report.checks)
        if artifacts and report.ok:
            checks.append(artifact_round_trip(settings))
    failed = [c for c in checks if c.status == "failed"]
    if as_json:
        payload = report.to_dict()
        payload["checks"] = [_check_dict(c) for c in checks]
        payload["ok"] = not failed
        payload["configuration"] = _summary(settings)
        payload["warnings"] = notes
        click.echo(json.dumps(payload, indent=2))
    else:
        _print_doctor(settings, report, checks, notes)
    for check in failed:
        click.echo(f"{check.name} failed: {check.detail} -- fix: {check.fix}", err=True)
    if failed:
        raise SystemExit(EXIT_FAILED)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list for machines.")
@click.option("--tracking-uri", default=None, metavar="URI", help=_URI_HELP)
def config(as_json: bool, tracking_uri: str | None) -> None:
    """Show every resolved setting and where it came from; secrets are redacted."""
    from michelangelo_mlflow._settings import Settings

    with _reported_warnings() as notes:
        rows = Settings(tracking_uri=tracking_uri).describe()
    if as_json:
        fields = [
            {"name": r.name, "value": r.value, "source": r.source, "variables": list(r.variables)}
            for r in rows
        ]
        click.echo(json.dumps(fields, indent=2))
        return
    _print_table(("SETTING", "VALUE", "SOURCE"), [(r.name, r.value, r.source) for r in rows])
    for note in notes:
        click.echo(f"warning: {note}", err=True)


@main.command()
@click.option("--namespace", required=True, help="The compute cluster namespace of task pods.")
@click.option(
    "--cidr",
    required=True,
    help="The MLflow server's address block, such as 10.0.0.5/32 (a bare IP means /32).",
)
@click.option(
    "--port",
    default=5000,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="The MLflow server's TCP port.",
)
@click.option(
    "--selector",
    "selectors",
    multiple=True,
    metavar="KEY=VALUE",
    help="A label of the task pods (repeatable, at least one: see kubectl get pods --show-labels).",
)
@click.option(
    "--artifact-store",
    "artifact_stores",
    multiple=True,
    metavar="CIDR[:PORT]",
    help="Also allow egress to the artifact store (S3/GCS endpoint block; port 443 unless "
    "given); repeatable.",
)
@click.option("--name", default="allow-mlflow-egress", show_default=True, help="The policy's name.")
def netpol(
    namespace: str,
    cidr: str,
    port: int,
    selectors: Sequence[str],
    artifact_stores: Sequence[str],
    name: str,
) -> None:
    """Print the egress NetworkPolicy that lets task pods reach the tracking server."""
    import yaml

    from michelangelo_mlflow._netpol import network_policy, parse_block, parse_selector

    server = parse_block(cidr, default_port=port, option="--cidr")
    stores = [parse_block(s, default_port=443, option="--artifact-store") for s in artifact_stores]
    labels = dict(parse_selector(selector) for selector in selectors)
    policy = network_policy(namespace, server, labels, name=name, artifact_stores=stores)
    click.echo("# Egress from task pods to the MLflow tracking server (kubectl apply -f this file)")
    if not stores:
        note = (
            "this policy does NOT allow egress to the artifact store: uploads of artifacts "
            "and models will fail unless another policy allows it (add --artifact-store "
            "CIDR[:PORT] for the S3/GCS endpoints)"
        )
        click.echo(f"# WARNING: {note}")
        click.echo(f"warning: {note}", err=True)
    click.echo(yaml.safe_dump(policy, sort_keys=False), nl=False)


@main.command()
@click.option(
    "--spool",
    "spool_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The spool directory; default MICHELANGELO_MLFLOW_SPOOL_DIR, else "
    "./.michelangelo-mlflow-spool.",
)
@click.option("--dry-run", is_flag=True, help="List what would be sent; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for machines.")
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to keep trying a server that does not answer.",
)
def sync(spool_dir: Path | None, dry_run: bool, as_json: bool, timeout: float) -> None:
    """Send what runs left in the spool to their tracking servers, and finish the runs.

    Replays, in order, the records of every run whose process ended before its
    server took them (an outage past the grace, a killed task), then sets the run's
    status: the one recorded, or KILLED when the process ended without one.
    Credentials come from the environment and are sent only to the server they
    belong to. Exit code 0 when everything was delivered, 1 when records remain.
    """
    from michelangelo_mlflow._logging.replay import pending_bytes
    from michelangelo_mlflow._logging.replay import sync as replay
    from michelangelo_mlflow._settings import Settings

    with _reported_warnings() as notes:
        settings = Settings()
    directory = spool_dir if spool_dir is not None else Path.cwd() / settings.spool_dir
    if directory.exists() and not directory.is_dir():
        raise ConfigurationError(
            f"--spool {directory} is a file, not a spool directory",
            variable="--spool",
            fix="pass the directory the runs spooled to (MICHELANGELO_MLFLOW_SPOOL_DIR)",
        )
    total = pending_bytes(directory)
    shown = not as_json and not dry_run and total > 0 and sys.stdout.isatty()
    bar: Any = click.progressbar(
        length=total, label="sending", file=None if shown else io.StringIO()
    )
    with bar:
        results = replay(
            directory, settings, dry_run=dry_run, timeout=timeout, on_progress=bar.update
        )
    if as_json:
        click.echo(json.dumps(_sync_summary(directory, results, notes), indent=2))
    else:
        _print_sync(directory, results, dry_run)
    if any(r.outcome in ("pending", "damaged") for r in results):
        raise SystemExit(EXIT_FAILED)


# --- output -------------------------------------------------------------------------
@contextmanager
def _reported_warnings() -> Iterator[list[str]]:
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield notes
    notes.extend(str(w.message) for w in caught)


def _check_dict(check: CheckResult) -> dict[str, Any]:
    return {
        "name": check.name,
        "status": check.status,
        "seconds": round(check.seconds, 4),
        "detail": check.detail,
        "fix": check.fix,
    }


def _summary(settings: Settings) -> dict[str, Any]:
    return {
        "tracking_uri": settings.safe_tracking_uri,
        "credentials": settings.credential_method,
        "version_policy": settings.version_policy,
        "preflight_timeout": settings.preflight_timeout,
        "preflight_attempts": settings.preflight_attempts,
        "preflight_deadline": settings.preflight_deadline,
    }


_STATUS = {"passed": "ok", "failed": "FAILED", "warning": "warning", "skipped": "skipped"}


def _print_doctor(
    settings: Settings, report: PreflightReport, checks: list[CheckResult], notes: list[str]
) -> None:
    click.echo(f"tracking URI    {report.tracking_uri}")
    click.echo(f"credentials     {settings.credential_method}")
    click.echo(f"client          mlflow {report.client_version}")
    click.echo(f"server          mlflow {report.server_version or 'unknown'}")
    click.echo(f"verdict         {report.verdict.value} (policy: {settings.version_policy})")
    click.echo("")
    _print_table(
        ("CHECK", "RESULT", "TIME", "DETAIL"),
        [(c.name, _STATUS[c.status], f"{c.seconds:.3f} s", c.detail) for c in checks],
    )
    for note in notes:
        click.echo(f"warning: {note}")
    for check in checks:
        if check.status == "warning" and check.fix:
            click.echo(f"{check.name}: {check.fix}")
    failed = sum(c.status == "failed" for c in checks)
    click.echo("")
    click.echo("all checks passed" if not failed else f"{failed} check(s) failed")


def _sync_summary(
    directory: Path, results: Sequence[SyncResult], notes: list[str]
) -> dict[str, Any]:
    return {
        "spool": str(directory),
        "runs": len({r.run_id for r in results}),
        "records_sent": sum(r.sent for r in results),
        "runs_completed": len({r.run_id for r in results if r.completed}),
        "runs_pending": len({r.run_id for r in results if r.outcome == "pending"}),
        "segments": [r.to_dict() for r in results],
        "warnings": notes,
    }


def _print_sync(directory: Path, results: Sequence[SyncResult], dry_run: bool) -> None:
    if not results:
        click.echo(f"nothing to send: no leftover runs in {directory}")
        return
    _print_table(
        ("RUN", "SERVER", "ROLE", "SENT", "RESULT", "DETAIL"),
        [
            (r.run_id, r.tracking_uri, r.role, str(r.sent), r.outcome, r.reason or "")
            for r in results
        ],
    )
    summary = _sync_summary(directory, results, [])
    click.echo("")
    if dry_run:
        click.echo(f"dry run: {summary['runs']} run(s) in {directory} would be sent")
        return
    click.echo(
        f"{summary['runs']} run(s), {summary['records_sent']} record(s) sent, "
        f"{summary['runs_completed']} run(s) completed, {summary['runs_pending']} still pending"
    )


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, str(row[-1])]))


if __name__ == "__main__":  # python -m michelangelo_mlflow._cli, as the console script does
    main()
