"""``michelangelo-mlflow``: check the tracking server from inside a pod, show settings.

A thin layer over the public API: ``doctor`` runs :func:`preflight` (and optionally an
artifact round trip), ``config`` prints :meth:`Settings.describe`, ``netpol`` prints the
platform guide's egress NetworkPolicy. A library error becomes one readable line on
stderr and a non-zero exit code: 1 when a check fails, 2 for a configuration or usage
error.
"""

from __future__ import annotations

import io
import ipaddress
import json
import secrets
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml

from michelangelo_mlflow._errors import FIX_ARTIFACTS, translate
from michelangelo_mlflow._preflight import CheckResult, PreflightReport, preflight
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow.exceptions import (
    ArtifactStoreError,
    ConfigurationError,
    MichelangeloMlflowError,
)

__all__ = ["main"]

EXIT_FAILED = 1
EXIT_CONFIGURATION = 2

_URI_HELP = "Tracking URI to use instead of MLFLOW_TRACKING_URI (credentials are redacted)."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    with _reported_warnings() as notes:
        settings = _settings(tracking_uri=tracking_uri)
        report = preflight(settings, force=True)
        checks = list(report.checks)
        if artifacts and report.ok:
            checks.append(_artifact_round_trip(settings))
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
    if failed:
        for check in failed:
            click.echo(f"{check.name} failed: {check.detail} -- fix: {check.fix}", err=True)
        raise SystemExit(EXIT_FAILED)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list for machines.")
@click.option("--tracking-uri", default=None, metavar="URI", help=_URI_HELP)
def config(as_json: bool, tracking_uri: str | None) -> None:
    """Show every resolved setting and where it came from; secrets are redacted."""
    with _reported_warnings() as notes:
        settings = _settings(tracking_uri=tracking_uri)
    rows = settings.describe()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "value": r.value,
                        "source": r.source,
                        "variables": list(r.variables),
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
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
    help="A label of the task pods (repeatable); none selects every pod in the namespace.",
)
@click.option("--name", default="allow-mlflow-egress", show_default=True, help="The policy's name.")
def netpol(namespace: str, cidr: str, port: int, selectors: Sequence[str], name: str) -> None:
    """Print the egress NetworkPolicy that lets task pods reach the tracking server."""
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise click.BadParameter(
            f"{cidr!r} is not an IP address or CIDR block (such as 10.0.0.5/32)",
            param_hint="--cidr",
        ) from None
    labels: dict[str, str] = {}
    for selector in selectors:
        key, sep, value = selector.partition("=")
        if not sep or not key:
            raise click.BadParameter(
                f"{selector!r} is not KEY=VALUE (such as app=training)", param_hint="--selector"
            )
        labels[key] = value
    click.echo("# Egress from task pods to the MLflow tracking server (kubectl apply -f this file)")
    click.echo(
        yaml.safe_dump(
            network_policy(namespace, str(network), port, labels, name=name), sort_keys=False
        ),
        nl=False,
    )


def network_policy(
    namespace: str,
    cidr: str,
    port: int,
    labels: dict[str, str],
    *,
    name: str = "allow-mlflow-egress",
) -> dict[str, Any]:
    """The platform guide's Step 1 egress NetworkPolicy, as a manifest dict.

    Args:
        namespace: The compute cluster namespace.
        cidr: The MLflow server's address block.
        port: The MLflow server's TCP port.
        labels: The task pods' labels; empty selects every pod in the namespace.
        name: The policy's name.

    Returns:
        The manifest, ready for ``yaml.safe_dump``.

    Example:
        >>> network_policy("ml", "10.0.0.5/32", 5000, {})["spec"]["policyTypes"]
        ['Egress']
    """
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": labels} if labels else {},
            "policyTypes": ["Egress"],
            "egress": [
                {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {
                    "to": [{"ipBlock": {"cidr": cidr}}],
                    "ports": [{"protocol": "TCP", "port": port}],
                },
            ],
        },
    }


@main.command()
@click.option(
    "--spool",
    "spool_dir",
    type=click.Path(file_okay=False, path_type=Path),
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
    from michelangelo_mlflow._replay import SyncResult, pending_bytes
    from michelangelo_mlflow._replay import sync as replay

    with _reported_warnings() as notes:
        settings = _settings()
    directory = spool_dir if spool_dir is not None else Path.cwd() / settings.spool_dir
    total = pending_bytes(directory)
    tty = sys.stdout.isatty()
    shown = not as_json and not dry_run and total > 0 and tty
    bar: Any = click.progressbar(
        length=total, label="sending", file=None if shown else io.StringIO()
    )
    with bar:
        results: list[SyncResult] = replay(
            directory, settings, dry_run=dry_run, timeout=timeout, on_progress=bar.update
        )
    pending = [r for r in results if r.outcome == "pending"]
    if as_json:
        click.echo(json.dumps(_sync_summary(directory, results, notes), indent=2))
    else:
        _print_sync(directory, results, dry_run)
    if pending:
        raise SystemExit(EXIT_FAILED)


def _sync_summary(directory: Path, results: Sequence[Any], notes: list[str]) -> dict[str, Any]:
    return {
        "spool": str(directory),
        "runs": len({r.run_id for r in results}),
        "records_sent": sum(r.sent for r in results),
        "runs_completed": len({r.run_id for r in results if r.completed}),
        "runs_pending": len({r.run_id for r in results if r.outcome == "pending"}),
        "segments": [r.to_dict() for r in results],
        "warnings": notes,
    }


def _print_sync(directory: Path, results: Sequence[Any], dry_run: bool) -> None:
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


# --- helpers ------------------------------------------------------------------------
def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ConfigurationError as exc:
        _fail(exc, EXIT_CONFIGURATION)


def _fail(exc: MichelangeloMlflowError, code: int) -> NoReturn:
    fix = f" -- fix: {exc.fix}" if exc.fix else ""
    click.echo(f"error: {exc.message}{fix}", err=True)
    raise SystemExit(code)


@contextmanager
def _reported_warnings() -> Iterator[list[str]]:
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield notes
    notes.extend(str(w.message) for w in caught)


def _artifact_round_trip(settings: Settings) -> CheckResult:
    from mlflow.tracking import MlflowClient

    from michelangelo_mlflow._scope import mlflow_scope

    uri = settings.safe_tracking_uri
    start = time.monotonic()
    content = secrets.token_hex(8)
    try:
        # MLflow prints a "View run" link to stdout, which would break --json.
        with mlflow_scope(settings), translate(uri), redirect_stdout(io.StringIO()):
            client = MlflowClient()
            experiment_id = settings.experiment_id if not settings.experiment_name else None
            if experiment_id is None:
                found = client.get_experiment_by_name(settings.experiment)
                experiment_id = (
                    found.experiment_id if found else client.create_experiment(settings.experiment)
                )
            run = client.create_run(
                experiment_id,
                run_name="michelangelo-mlflow-doctor",
                tags={"michelangelo.doctor": "artifact round trip"},
            )
            run_id = run.info.run_id
            try:
                client.log_text(run_id, content, "doctor/round-trip.txt")
                with tempfile.TemporaryDirectory() as tmp:
                    path = client.download_artifacts(run_id, "doctor/round-trip.txt", tmp)
                    read_back = Path(path).read_text()
            finally:
                client.set_terminated(run_id)
                client.delete_run(run_id)
        if read_back != content:
            raise ArtifactStoreError(
                f"the artifact read back from run {run_id} differs from the one written",
                tracking_uri=uri,
                run_id=run_id,
                fix=FIX_ARTIFACTS,
            )
    except MichelangeloMlflowError as exc:
        return CheckResult("artifacts", "failed", time.monotonic() - start, exc.message, exc.fix)
    except Exception as exc:  # anything else on the way to the store is an artifact failure
        detail = f"artifact round trip failed: {type(exc).__name__}: {exc}".splitlines()[0]
        return CheckResult("artifacts", "failed", time.monotonic() - start, detail, FIX_ARTIFACTS)
    seconds = time.monotonic() - start
    return CheckResult("artifacts", "passed", seconds, "wrote and read back a tiny artifact")


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


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, str(row[-1])]))


if __name__ == "__main__":  # python -m michelangelo_mlflow._cli, as the console script does
    main()
