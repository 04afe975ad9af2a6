"""The ``michelangelo.execution`` tag, from real interpreters: a script, a REPL, a kernel."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import michelangelo_mlflow as mm
from michelangelo_mlflow._provenance import execution
from michelangelo_mlflow.testing import TrackingServer

# One tracked run; prints its id. A blank line ends the ``with`` block in a REPL.
CODE = (
    "import michelangelo_mlflow as mm\n"
    "with mm.tracking_run('execution-{tag}') as run:\n"
    "    print('RUN', run.info.run_id)\n"
    "\n"
)


def run_id_in(output: str) -> str:
    """The run id the code printed."""
    [line] = [line for line in output.splitlines() if line.startswith("RUN ")]
    return line.split()[1]


def interpreter(args: list[str], server: TrackingServer, stdin: str | None, cwd: Path) -> str:
    """Run ``python ARGS`` with the tracking server configured; its standard output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UF_", "MLFLOW_"))}
    env["MLFLOW_TRACKING_URI"] = server.url
    result = subprocess.run(
        [sys.executable, *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("python script.py", "script"),
        ("python -m module", "script"),
        ("python -c", "script"),
        ("code piped to python", "script"),
        ("python -i (the REPL reading stdin)", "interactive"),
    ],
)
def test_the_execution_tag_tells_a_script_from_a_repl(
    tracking_server: TrackingServer, client: MlflowClient, tmp_path: Path, how: str, expected: str
) -> None:
    code = CODE.format(tag=uuid.uuid4().hex[:6])
    (tmp_path / "train.py").write_text(code)
    args, stdin = {
        "python script.py": (["train.py"], None),
        "python -m module": (["-m", "train"], None),
        "python -c": (["-c", code], None),
        "code piped to python": ([], code),
        "python -i (the REPL reading stdin)": (["-i"], code),
    }[how]
    run_id = run_id_in(interpreter(args, tracking_server, stdin, tmp_path))
    assert client.get_run(run_id).data.tags["michelangelo.execution"] == expected


def test_a_notebook_kernel_is_interactive(
    tracking_server: TrackingServer,
    client: MlflowClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import nbclient
    import nbformat

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)  # the kernel inherits it
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(CODE.format(tag="kernel"))]
    nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=120, resources={"metadata": {"path": tmp_path}}
    ).execute()
    printed = "".join(output.get("text", "") for output in notebook.cells[0]["outputs"])
    run_id = run_id_in(printed)
    assert client.get_run(run_id).data.tags["michelangelo.execution"] == "interactive"


@pytest.mark.parametrize(
    ("variables", "expected"),
    [({"UF_REMOTE_RUN": "1"}, "remote"), ({"UF_LOCAL_RUN": "1"}, "local"), ({}, "script")],
)
def test_uniflow_variables_come_first(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: str
) -> None:
    """This test process is pytest: a script, unless uniflow says where it runs."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings = mm.Settings(tracking_uri="http://127.0.0.1:5000")
    assert execution(settings) == expected
