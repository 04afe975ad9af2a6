"""mm.start_run: a run that spans cells, and how it ends when the kernel does not reach end()."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

import michelangelo_mlflow as mm
from michelangelo_mlflow.exceptions import ConfigurationError
from michelangelo_mlflow.testing import TrackingServer


@pytest.fixture(autouse=True)
def no_run_left_open() -> Iterator[None]:
    yield
    left = mm.NotebookRun.current()
    if left is not None:
        left.end()
        pytest.fail(f"the test left {left!r} open")


@pytest.fixture(autouse=True)
def no_last_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("last_exc", "last_value", "last_type", "last_traceback"):
        monkeypatch.delattr(sys, name, raising=False)


def experiment_name() -> str:
    return f"notebook-{uuid.uuid4().hex[:8]}"


# --- the handle ---------------------------------------------------------------------------


def test_a_run_spans_cells_and_ends_finished(settings: mm.Settings, client: MlflowClient) -> None:
    hook = sys.excepthook
    run = mm.start_run(experiment=experiment_name(), run_name="spans", settings=settings)
    assert run.status == "RUNNING"
    active = mlflow.active_run()
    assert active is not None
    assert active.info.run_id == run.info.run_id == run.run_id
    mlflow.log_metric("rows", 1_000)  # "a later cell"
    mlflow.log_param("sample", 0.1)
    run.end()
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.metrics == {"rows": 1_000}
    assert stored.data.params == {"sample": "0.1"}
    assert stored.data.tags["michelangelo.execution"] == "script"  # pytest is a script
    assert run.status == "FINISHED"
    assert mlflow.active_run() is None
    assert mm.NotebookRun.current() is None
    run.end()  # again: nothing happens
    assert sys.excepthook is hook


def test_a_second_start_run_names_the_open_one(settings: mm.Settings) -> None:
    run = mm.start_run(experiment=experiment_name(), run_name="first", settings=settings)
    try:
        with pytest.raises(ConfigurationError, match=run.run_id) as info:
            mm.start_run(experiment=experiment_name(), settings=settings)
        assert "'first'" in str(info.value)
        assert "run.end()" in (info.value.fix or "")
        assert mm.NotebookRun.current() is run
    finally:
        run.end()


def test_a_cell_error_is_recorded_only_when_asked(
    settings: mm.Settings, client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "last_value", KeyError("before the run"), raising=False)
    quiet = mm.start_run(experiment=experiment_name(), settings=settings)
    monkeypatch.setattr(sys, "last_value", ValueError("cell 3 failed"), raising=False)
    quiet.end()
    assert client.get_run(quiet.run_id).info.status == "FINISHED"

    asked = mm.start_run(experiment=experiment_name(), settings=settings)
    asked.end(record_error=True)  # the last error is older than the run: nothing to record
    assert client.get_run(asked.run_id).info.status == "FINISHED"

    failed = mm.start_run(experiment=experiment_name(), settings=settings)
    monkeypatch.setattr(sys, "last_value", ValueError("cell 7 failed"), raising=False)
    failed.end(record_error=True)
    stored = client.get_run(failed.run_id)
    assert stored.info.status == "FAILED"
    assert stored.data.tags["michelangelo.error.type"] == "ValueError"
    assert stored.data.tags["michelangelo.error.message"] == "cell 7 failed"


def test_end_with_an_explicit_status(settings: mm.Settings, client: MlflowClient) -> None:
    run = mm.start_run(experiment=experiment_name(), settings=settings)
    with pytest.raises(ConfigurationError, match="'DONE'") as info:
        run.end("DONE")  # type: ignore[arg-type]
    assert info.value.variable == "status"
    run.end("KILLED")
    stored = client.get_run(run.run_id)
    assert (stored.info.status, run.status) == ("KILLED", "KILLED")
    assert "michelangelo.error.type" not in stored.data.tags


def test_the_handle_is_a_context_manager(settings: mm.Settings, client: MlflowClient) -> None:
    with pytest.raises(RuntimeError, match="in the block"):
        with mm.start_run(experiment=experiment_name(), settings=settings) as run:
            mlflow.log_metric("loss", 0.5)
            raise RuntimeError("in the block")
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FAILED"
    assert stored.data.metrics == {"loss": 0.5}
    assert run.status == "FAILED"
    with pytest.raises(RuntimeError, match="has ended"):
        run.__enter__()


def test_sigterm_ends_the_run_and_a_surviving_process_can_start_another(
    settings: mm.Settings, client: MlflowClient
) -> None:
    import signal

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)  # survives SIGTERM
    try:
        run = mm.start_run(experiment=experiment_name(), settings=settings)
        os.kill(os.getpid(), signal.SIGTERM)
        assert mm.NotebookRun.current() is None
        assert run.status == "KILLED"
        assert client.get_run(run.run_id).info.status == "KILLED"
        mm.start_run(experiment=experiment_name(), settings=settings).end()
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_bad_options_fail_before_any_run(settings: mm.Settings) -> None:
    with pytest.raises(ConfigurationError, match="unexpected option 'autolg'"):
        mm.start_run(experiment="x", autolg="sklearn", settings=settings)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError) as info:
        mm.start_run(experiment="x", system_metrics="yes", settings=settings)  # type: ignore[arg-type]
    assert info.value.variable == "system_metrics"
    assert mm.NotebookRun.current() is None
    assert mlflow.active_run() is None


def test_autolog_stays_in_force_until_the_run_ends(
    settings: mm.Settings, client: MlflowClient
) -> None:
    from mlflow.utils.autologging_utils import autologging_is_disabled
    from sklearn.linear_model import LogisticRegression

    run = mm.start_run(
        experiment=experiment_name(), autolog={"sklearn": {"log_models": False}}, settings=settings
    )
    LogisticRegression(C=0.3).fit([[0.0], [1.0], [0.1], [0.9]], [0, 1, 0, 1])  # "a later cell"
    assert not autologging_is_disabled("sklearn")
    run.end()
    assert client.get_run(run.run_id).data.params["C"] == "0.3"
    assert autologging_is_disabled("sklearn")


def test_text_and_html_show_the_run_and_its_link(
    settings: mm.Settings, tracking_server: TrackingServer
) -> None:
    run = mm.start_run(experiment="<b>notebooks</b>", run_name="a&b", settings=settings)
    try:
        url = f"{tracking_server.url}/#/experiments/{run.info.experiment_id}/runs/{run.run_id}"
        assert run.url == url
        text = repr(run)
        assert text.startswith(f"NotebookRun(run_id='{run.run_id}', run_name='a&b'")
        assert f"status='RUNNING', url='{url}'" in text
        page = run._repr_html_()
        assert f'<a href="{url}"' in page
        assert "a&amp;b" in page
        assert "&lt;b&gt;notebooks&lt;/b&gt;" in page
        assert "<b>RUNNING</b>" in page
    finally:
        run.end()
    assert "<b>FINISHED</b>" in run._repr_html_()


def test_a_local_store_has_no_link() -> None:
    run = mm.start_run(experiment="local")
    try:
        assert run.url is None
        assert "no UI link" in run._repr_html_()
    finally:
        run.end()


# --- when the process ends with the run open: real subprocesses --------------------------

SCRIPT = """
import os, signal, sys
import mlflow
import michelangelo_mlflow as mm

run = mm.start_run(experiment="notebook-exits", run_name=sys.argv[1])
mlflow.log_metric("seen", 1)
print(run.run_id, flush=True)
{ending}
"""

ENDINGS = {
    "exit": "",  # the script just ends: interpreter exit
    "sys-exit": "sys.exit(0)",
    "exception": "raise ValueError('training diverged')",
    "interrupt": "raise KeyboardInterrupt",
    "sigterm": "os.kill(os.getpid(), signal.SIGTERM)\nimport time; time.sleep(30)",
}


@pytest.mark.parametrize(
    ("ending", "status", "error_type", "returncode"),
    [
        ("exit", "KILLED", "michelangelo_mlflow._notebook.ProcessExit", 0),
        ("sys-exit", "KILLED", "michelangelo_mlflow._notebook.ProcessExit", 0),
        ("exception", "FAILED", "ValueError", 1),
        ("interrupt", "KILLED", "KeyboardInterrupt", -2),  # Python re-raises SIGINT
        ("sigterm", "KILLED", "michelangelo_mlflow._signals.Terminated", -15),
    ],
)
def test_the_process_ending_ends_the_run(
    tracking_server: TrackingServer,
    client: MlflowClient,
    tmp_path: Path,
    ending: str,
    status: str,
    error_type: str,
    returncode: int,
) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT).format(ending=ENDINGS[ending]))
    result = subprocess.run(
        [sys.executable, str(script), ending],
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_server.url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == returncode, result.stderr[-3000:]
    run_id = result.stdout.split()[0]
    stored = client.get_run(run_id)
    assert stored.info.status == status, result.stderr[-3000:]
    assert stored.data.metrics == {"seen": 1}
    assert stored.data.tags["michelangelo.error.type"] == error_type
    if ending in ("exit", "sys-exit"):
        assert "was still open when the process exited" in result.stderr


# --- a real Jupyter kernel ----------------------------------------------------------------


def execute(cells: list[str], cwd: Path, *, timeout: int = 120) -> list[dict[str, object]]:
    """Run the cells in a fresh ipykernel (errors allowed); the executed cells."""
    import nbclient
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=timeout,
        allow_errors=True,
        resources={"metadata": {"path": str(cwd)}},
    ).execute()
    return list(notebook.cells)


def outputs(cell: dict[str, object]) -> str:
    """Everything a cell showed: text, HTML, and error names and values."""
    shown = []
    for output in cell["outputs"]:  # type: ignore[attr-defined]
        data = output.get("data", {})
        shown += [output.get("text", ""), data.get("text/plain", ""), data.get("text/html", "")]
        shown += [output.get("ename", ""), output.get("evalue", "")]
    return "\n".join(shown)


def test_a_kernel_runs_a_run_across_cells_and_the_magics(
    tracking_server: TrackingServer,
    client: MlflowClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)  # the kernel inherits it
    name = experiment_name()
    cells = execute(
        [
            "%load_ext michelangelo_mlflow\nimport mlflow\nimport michelangelo_mlflow as mm",
            f"run = mm.start_run(experiment={name!r}, run_name='kernel')\nrun",
            "mlflow.log_metric('loss', 0.5, step=0)",
            "raise ValueError('cell failed')",
            "mlflow.log_metric('loss', 0.25, step=1)",
            "%mm_run",
            f"%%tracked experiment={name} run_name=child nested=True\n"
            "mlflow.log_metric('child', 1)\n21 * 2",
            f"%%tracked experiment={name} run_name=broken nested=True\nraise RuntimeError('bad')",
            "run.end(record_error=True)\nprint(run.status)",
            "%mm_run",
        ],
        tmp_path,
    )
    assert "<a href=" in outputs(cells[1])
    assert "ValueError" in outputs(cells[3])
    assert "RUNNING" in outputs(cells[5])
    assert "42" in outputs(cells[6])
    assert "RuntimeError" in outputs(cells[7])
    assert "FAILED" in outputs(cells[8])
    assert "ended FAILED" in outputs(cells[9])

    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"kernel", "child", "broken"}
    kernel = runs["kernel"]
    history = client.get_metric_history(kernel.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.25)]
    assert kernel.info.status == "FAILED"  # record_error=True: the last cell error
    assert kernel.data.tags["michelangelo.error.type"] == "RuntimeError"
    assert runs["child"].info.status == "FINISHED"
    assert runs["child"].data.metrics == {"child": 1}
    assert runs["child"].data.tags["mlflow.parentRunId"] == kernel.info.run_id
    assert runs["broken"].info.status == "FAILED"
    assert runs["broken"].data.tags["michelangelo.error.message"] == "bad"


@pytest.mark.parametrize("how", ["shutdown", "sigterm"])
def test_a_kernel_that_goes_away_ends_the_run_killed(
    tracking_server: TrackingServer,
    client: MlflowClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    import signal

    from jupyter_client.manager import KernelManager

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(tmp_path))
    kernel = manager.client()
    kernel.start_channels()
    try:
        kernel.wait_for_ready(timeout=60)
        shown: list[str] = []
        reply = kernel.execute_interactive(
            "import mlflow, michelangelo_mlflow as mm\n"
            f"run = mm.start_run(experiment={experiment_name()!r})\n"
            "mlflow.log_metric('seen', 1)\nprint(run.run_id)",
            timeout=120,
            output_hook=lambda msg: shown.append(msg["content"].get("text", "")),
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        run_id = "".join(shown).split()[0]
        if how == "shutdown":
            manager.shutdown_kernel(now=False)  # what Jupyter's "Shut down kernel" does
        else:
            manager.signal_kernel(signal.SIGTERM)
            manager.finish_shutdown(waittime=30)
    finally:
        kernel.stop_channels()
        if manager.is_alive():
            manager.shutdown_kernel(now=True)
    stored = client.get_run(run_id)
    assert stored.info.status == "KILLED"
    assert stored.data.metrics == {"seen": 1}
    cause = {"shutdown": "_notebook.ProcessExit", "sigterm": "_signals.Terminated"}[how]
    assert stored.data.tags["michelangelo.error.type"] == f"michelangelo_mlflow.{cause}"
