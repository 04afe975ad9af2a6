"""A tracking-server outage never kills a task or loses a point: real servers, real faults.

Each test breaks a real ``mlflow server`` in the middle of a run (kills it by its pid
and restarts it on the same port and store, or puts a real proxy in front of it that
answers 503, hangs or loses answers) and then counts what reached the server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

import michelangelo_mlflow as mm
from michelangelo_mlflow._cli import main
from michelangelo_mlflow._state import STATE
from michelangelo_mlflow.exceptions import (
    ConfigurationError,
    MichelangeloMlflowWarning,
    TrackingError,
)
from michelangelo_mlflow.testing import TrackingServer
from tests._proxy import FaultProxy
from tests.helpers.processes import sync_cli

SPOOL = ".michelangelo-mlflow-spool"
LOG_BATCH = "/api/2.0/mlflow/runs/log-batch"


def history(client: MlflowClient, run_id: str, key: str = "loss") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def left_behind(directory: Path = Path(SPOOL)) -> list[Path]:
    """Whatever the spool left in its directory (nothing, once every record is delivered)."""
    return sorted(directory.rglob("*")) if directory.exists() else []


def test_server_killed_mid_run_and_restarted_loses_nothing(own_server: TrackingServer) -> None:
    settings = mm.Settings(tracking_uri=own_server.url)
    with mm.tracking_run("outage", "killed", settings=settings) as run:
        run_id = run.info.run_id
        for step in range(50):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        own_server.kill()
        # Every kind of plain MLflow call returns while the server is down.
        for step in range(50, 100):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_params({"lr": 0.1, "depth": 6})
        mlflow.set_tags({"team": "risk"})
        MlflowClient().log_batch(
            run_id,
            metrics=[Metric("auc", 0.9, int(time.time() * 1000), 0)],
            params=[Param("seed", "7")],
            tags=[RunTag("phase", "outage")],
        )
        assert mlflow.get_run(run_id).data.params["lr"] == "0.1"  # answered from the spool
        assert STATE.spools[run_id].pending_bytes() > 0  # held in the spool
        own_server.restart()
    client = MlflowClient(own_server.url)
    stored = client.get_run(run_id)
    assert stored.info.status == "FINISHED"
    assert history(client, run_id) == [(s, 1.0 / (s + 1)) for s in range(100)]  # no duplicates
    assert stored.data.params == {"lr": "0.1", "depth": "6", "seed": "7"}
    assert (stored.data.tags["team"], stored.data.tags["phase"]) == ("risk", "outage")
    assert stored.data.metrics["auc"] == 0.9
    experiment = client.get_experiment_by_name("outage")
    assert experiment is not None
    assert len(client.search_runs([experiment.experiment_id])) == 1  # one run, not two
    assert left_behind() == []  # delivered: nothing left behind


def test_a_server_answering_503_for_a_while(proxy: FaultProxy, client: MlflowClient) -> None:
    settings = mm.Settings(tracking_uri=proxy.url)
    with mm.tracking_run("outage", "503", settings=settings) as run:
        mlflow.log_metric("loss", 1.0, step=0)
        proxy.mode = "503"
        for step in range(1, 30):
            mlflow.log_metric("loss", 1.0, step=step)
        deadline = time.monotonic() + 30
        while 503 not in proxy.requests_to(LOG_BATCH) and time.monotonic() < deadline:
            time.sleep(0.1)
        proxy.mode = "forward"
    assert 503 in proxy.requests_to(LOG_BATCH)
    assert [step for step, _ in history(client, run.info.run_id)] == list(range(30))
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_a_server_that_hangs_then_answers(proxy: FaultProxy, client: MlflowClient) -> None:
    settings = mm.Settings(tracking_uri=proxy.url, spool_grace=15.0)  # requests time out at 5 s
    with mm.tracking_run("outage", "hang", settings=settings) as run:
        proxy.mode = "hang"
        for step in range(20):
            mlflow.log_metric("loss", 0.5, step=step)
        threading.Timer(7.0, lambda: setattr(proxy, "mode", "forward")).start()
    assert [step for step, _ in history(client, run.info.run_id)] == list(range(20))
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_a_batch_whose_answer_was_lost_is_not_applied_twice(
    proxy: FaultProxy, client: MlflowClient
) -> None:
    settings = mm.Settings(tracking_uri=proxy.url)
    with mm.tracking_run("outage", "lost-answer", params={"lr": 0.1}, settings=settings) as run:
        proxy.drop_answers(LOG_BATCH, 2)
        for step in range(300):
            mlflow.log_metric("loss", step / 300, step=step)
        mlflow.log_param("depth", 6)
    sent = proxy.requests_to(LOG_BATCH)
    assert sent.count(None) == 2  # two batches reached the server, their answers did not
    assert history(client, run.info.run_id) == [(s, s / 300) for s in range(300)]
    stored = client.get_run(run.info.run_id)
    assert stored.data.params == {"lr": "0.1", "depth": "6"}
    assert stored.info.status == "FINISHED"


@pytest.mark.parametrize(("fails", "status"), [(False, "FINISHED"), (True, "FAILED")])
def test_down_past_the_grace_then_sync_completes_the_run(
    proxy: FaultProxy, client: MlflowClient, fails: bool, status: str
) -> None:
    settings = mm.Settings(tracking_uri=proxy.url, spool_grace=2.0)
    run_id = ""
    with pytest.warns(MichelangeloMlflowWarning, match="michelangelo-mlflow sync") as warned:
        with pytest.raises(RuntimeError) if fails else _nothing():
            with mm.tracking_run("outage", f"past-grace-{status}", settings=settings) as run:
                run_id = run.info.run_id
                proxy.mode = "503"
                for step in range(10):
                    mlflow.log_metric("loss", 0.1, step=step)
                if fails:
                    raise RuntimeError("the task failed while the server was down")
    assert str(Path(SPOOL).resolve()) in str(warned[0].message)
    assert client.get_run(run_id).info.status == "RUNNING"  # never FINISHED by an exit handler
    proxy.mode = "forward"
    result = CliRunner().invoke(main, ["sync", "--json"], env={"MLFLOW_TRACKING_URI": proxy.url})
    assert result.exit_code == 0, result.output
    stored = client.get_run(run_id)
    assert stored.info.status == status
    assert [step for step, _ in history(client, run_id)] == list(range(10))
    if fails:
        assert stored.data.tags["michelangelo.error.type"] == "RuntimeError"
    assert left_behind() == []


def test_the_next_run_replays_leftovers_in_the_background(
    proxy: FaultProxy, client: MlflowClient
) -> None:
    settings = mm.Settings(tracking_uri=proxy.url, spool_grace=1.0)
    with pytest.warns(MichelangeloMlflowWarning, match="grace"):
        with mm.tracking_run("outage", "left-over", settings=settings) as first:
            proxy.mode = "503"
            mlflow.log_metric("loss", 0.25, step=3)
    proxy.mode = "forward"
    with mm.tracking_run("outage", "next", settings=mm.Settings(tracking_uri=proxy.url)):
        deadline = time.monotonic() + 30
        while client.get_run(first.info.run_id).info.status == "RUNNING":
            assert time.monotonic() < deadline, "the leftover was not replayed"
            time.sleep(0.2)
    assert history(client, first.info.run_id) == [(3, 0.25)]
    assert client.get_run(first.info.run_id).info.status == "FINISHED"


def test_records_the_server_refuses_are_named_at_run_end(
    settings: mm.Settings, client: MlflowClient
) -> None:
    with pytest.raises(TrackingError, match="refused 1 record") as info:
        with mm.tracking_run("outage", "invalid", settings=settings) as run:
            mlflow.log_metric("loss", 0.5)
            MlflowClient().log_batch(run.info.run_id, tags=[RunTag("x" * 300, "too long a key")])
    assert info.value.run_id == run.info.run_id
    assert "'" + "x" * 40 in str(info.value) or "xxxxxxxx" in str(info.value)
    stored = client.get_run(run.info.run_id)
    assert stored.data.metrics == {"loss": 0.5}  # everything else was logged
    assert stored.info.status == "FINISHED"


def test_a_run_deleted_mid_run_is_not_an_outage(
    settings: mm.Settings, client: MlflowClient
) -> None:
    with pytest.raises(TrackingError) as info:
        with mm.tracking_run("outage", "deleted", settings=settings) as run:
            client.delete_run(run.info.run_id)
            mlflow.log_metric("loss", 0.5)
    assert info.value.run_id == run.info.run_id
    assert SPOOL in str(info.value)
    assert "sync" in str(info.value)


def test_the_size_cap_drops_the_oldest_points_only(proxy: FaultProxy, client: MlflowClient) -> None:
    settings = mm.Settings(tracking_uri=proxy.url, spool_max_bytes="1MiB")
    with mm.tracking_run("outage", "capped", params={"lr": 0.1}, settings=settings) as run:
        proxy.mode = "503"
        with pytest.warns(MichelangeloMlflowWarning, match="oldest metric points"):
            for step in range(40_000):
                mlflow.log_metric("loss", 0.5, step=step)
        mlflow.set_tag("kept", "yes")
        time.sleep(2)  # the courier compacts the spool while the server is down
        proxy.mode = "forward"
    stored = client.get_run(run.info.run_id)
    steps = [step for step, _ in history(client, run.info.run_id)]
    assert 0 < len(steps) < 40_000
    assert steps[-1] == 39_999
    assert steps == sorted(steps)
    assert stored.data.params == {"lr": "0.1"}
    assert stored.data.tags["kept"] == "yes"
    assert int(stored.data.tags["michelangelo.spool.dropped_points"]) == 40_000 - len(steps)
    assert stored.info.status == "FINISHED"


def test_an_unwritable_spool_directory_is_an_error_before_the_run(
    settings: mm.Settings, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file in the way")
    unwritable = mm.Settings(tracking_uri=settings.safe_tracking_uri, spool_dir=blocker / "spool")
    with pytest.raises(ConfigurationError, match="cannot be created") as info:
        with mm.tracking_run("outage", settings=unwritable):
            pass
    assert info.value.variable == "MICHELANGELO_MLFLOW_SPOOL_DIR"
    assert "MICHELANGELO_MLFLOW_SPOOL=off" in str(info.value)
    assert mlflow.active_run() is None


def test_spool_off_restores_mlflows_own_retry_budget(
    settings: mm.Settings, client: MlflowClient
) -> None:
    off = mm.Settings(tracking_uri=settings.safe_tracking_uri, spool="off")
    with mm.tracking_run("outage", "spool-off", settings=off) as run:
        assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # MLflow's 7, not ours
        mlflow.log_metric("loss", 0.5)
        assert left_behind() == []
    assert client.get_run(run.info.run_id).data.metrics == {"loss": 0.5}


TASK = """
import sys, time, mlflow, michelangelo_mlflow as mm
with mm.tracking_run("outage", "sigkill", settings=mm.Settings(tracking_uri=sys.argv[1])) as run:
    print("run", run.info.run_id, flush=True)
    step = 0
    while True:
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        print("logged", step, flush=True)
        step += 1
        time.sleep(0.01)
"""


def test_a_task_killed_by_sigkill_is_completed_by_sync(
    tracking_server: TrackingServer, client: MlflowClient, tmp_path: Path
) -> None:
    task = subprocess.Popen(
        [sys.executable, "-c", TASK, tracking_server.url],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert task.stdout is not None
    run_id = task.stdout.readline().split()[1]
    returned = -1
    while returned < 150:
        returned = int(task.stdout.readline().split()[1])
    task.kill()
    task.wait(timeout=30)
    sync = sync_cli(tmp_path, tracking_server.url)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    steps = {step for step, _ in history(client, run_id)}
    assert set(range(returned + 1)) <= steps  # every point whose call returned is there
    stored = client.get_run(run_id)
    assert stored.info.status == "KILLED"
    assert stored.data.tags["michelangelo.error.type"] == "ProcessEnded"
    assert "1 run(s)" in sync.stdout
    assert "completed" in sync.stdout


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def test_artifacts_logged_during_an_outage_are_kept_and_uploaded(
    own_server: TrackingServer, tmp_path: Path
) -> None:
    report = tmp_path / "report.txt"
    report.write_text("auc 0.91")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "roc.csv").write_text("fpr,tpr\n0,0\n1,1\n")
    (plots / "by-class").mkdir()
    (plots / "by-class" / "pr.csv").write_text("p,r\n1,0\n")
    # A short grace: the files go as soon as the server answers again, each in one try
    # (MLflow's own upload retries inside the call, with a doubling backoff).
    settings = mm.Settings(tracking_uri=own_server.url, spool_grace=3.0)
    with mm.tracking_run("outage", "artifacts", settings=settings) as run:
        own_server.kill()
        mlflow.log_artifact(str(report))
        mlflow.log_artifacts(str(plots), artifact_path="plots")
        mlflow.log_text("written while down", "notes/down.txt")
        kept = sorted(p.name for p in Path(SPOOL).glob("*.files/*/*"))
        assert kept == ["down.txt", "plots", "report.txt"]
        report.unlink()  # the user's files are theirs again: the spool holds copies
        own_server.restart()
    client = MlflowClient(own_server.url)
    listed = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert listed == {"report.txt", "plots", "notes"}
    plotted = [a.path for a in client.list_artifacts(run.info.run_id, "plots")]
    assert plotted == ["plots/by-class", "plots/roc.csv"]
    nested = client.list_artifacts(run.info.run_id, "plots/by-class")
    assert [a.path for a in nested] == ["plots/by-class/pr.csv"]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    downloaded = Path(client.download_artifacts(run.info.run_id, "notes/down.txt", str(tmp_path)))
    assert downloaded.read_text() == "written while down"
    assert left_behind() == []


def test_the_spool_never_holds_a_secret(auth_server: TrackingServer, tmp_path: Path) -> None:
    secret = auth_server.admin_password
    settings = mm.Settings(
        tracking_uri=auth_server.url,
        tracking_username=auth_server.admin_username,
        tracking_password=secret,
        spool_grace=1.0,
    )
    with FaultProxy(auth_server.url) as proxy:
        settings = mm.Settings(
            tracking_uri=proxy.url,
            tracking_username=auth_server.admin_username,
            tracking_password=secret,
            spool_grace=1.0,
        )
        with pytest.warns(MichelangeloMlflowWarning, match="sync"):
            with pytest.raises(RuntimeError):
                with mm.tracking_run(
                    "outage",
                    "canary",
                    params={"dsn": f"postgresql://etl:{secret}@db/x", "token": secret},
                    description=f"connects with {secret}",
                    settings=settings,
                ):
                    proxy.mode = "503"
                    mlflow.set_tag("note", f"password is {secret}")
                    mlflow.log_param("connection", f"host=db password={secret}")
                    raise RuntimeError(f"login with {secret} failed")
        files = [p for p in Path(SPOOL).rglob("*") if p.is_file()]
        assert any(p.suffix == ".db" and p.stat().st_size for p in files)
        for path in files:
            assert secret not in path.read_text(errors="replace"), path
        proxy.mode = "forward"
        env = {
            "MLFLOW_TRACKING_URI": proxy.url,
            "MLFLOW_TRACKING_USERNAME": auth_server.admin_username,
            "MLFLOW_TRACKING_PASSWORD": secret,
        }
        result = CliRunner().invoke(main, ["sync"], env=env)
    assert result.exit_code == 0, result.output
    assert secret not in result.output


def test_log_model_during_an_outage_waits_then_says_what_to_do(
    own_server: TrackingServer,
) -> None:
    from sklearn.linear_model import LogisticRegression

    from michelangelo_mlflow.exceptions import TrackingServerUnreachableError

    classifier = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    settings = mm.Settings(tracking_uri=own_server.url, spool_grace=3.0)
    with pytest.raises(TrackingServerUnreachableError) as info:
        with pytest.warns(MichelangeloMlflowWarning, match="sync"):
            with mm.tracking_run("outage", "log-model", settings=settings) as run:
                mlflow.log_metric("auc", 0.9)
                own_server.kill()
                mlflow.sklearn.log_model(classifier, name="model")
    assert "save_model" in str(info.value.fix)
    assert "while logging a model" in str(info.value)
    own_server.restart()
    result = CliRunner().invoke(main, ["sync"], env={"MLFLOW_TRACKING_URI": own_server.url})
    assert result.exit_code == 0, result.output
    stored = MlflowClient(own_server.url).get_run(run.info.run_id)
    assert stored.info.status == "FAILED"  # never FINISHED: the task failed
    assert stored.data.metrics == {"auc": 0.9}  # nothing logged before was lost


def test_sync_dry_run_lists_what_it_would_send_and_sends_nothing(
    proxy: FaultProxy, client: MlflowClient
) -> None:
    import json

    settings = mm.Settings(tracking_uri=proxy.url, spool_grace=1.0)
    with pytest.warns(MichelangeloMlflowWarning, match="sync"):
        with mm.tracking_run("outage", "dry-run", settings=settings) as run:
            proxy.mode = "503"
            for step in range(5):
                mlflow.log_metric("loss", 0.5, step=step)
    proxy.mode = "forward"
    env = {"MLFLOW_TRACKING_URI": proxy.url}
    result = CliRunner().invoke(main, ["sync", "--dry-run", "--json"], env=env)
    assert result.exit_code == 0, result.output
    (segment,) = json.loads(result.stdout)["segments"]
    assert (segment["run_id"], segment["outcome"], segment["sent"]) == (
        run.info.run_id,
        "dry-run",
        0,
    )
    assert segment["reason"].startswith("6 record(s) to send")  # 5 points and the status
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # nothing was sent
    assert CliRunner().invoke(main, ["sync"], env=env).exit_code == 0
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


POOL_400 = (
    b'{"error_code": "BAD_REQUEST", "message": "(sqlalchemy.exc.TimeoutError) QueuePool '
    b"limit of size 5 overflow 10 reached, connection timed out, timeout 30.00 (Background "
    b'on this error at: https://sqlalche.me/e/21/3o7r)"}'
)


def test_a_busy_servers_pool_400_at_run_start_is_tried_again(
    proxy: FaultProxy, client: MlflowClient
) -> None:
    # 64 tasks starting at once exhaust a 1-worker server's pool: MLflow answers the
    # creation 400 with SQLAlchemy's text, and nothing was created. The run starts.
    proxy.refuse("/api/2.0/mlflow/runs/create", 400, body=POOL_400, times=3)
    with mm.tracking_run("outage", "pool", settings=mm.Settings(tracking_uri=proxy.url)) as run:
        mlflow.log_metric("loss", 0.5, step=0)
    assert proxy.requests_to("/api/2.0/mlflow/runs/create") == [400, 400, 400, 200]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    experiment = client.get_experiment_by_name("outage")
    assert experiment is not None
    named = client.search_runs([experiment.experiment_id], "attributes.run_name = 'pool'")
    assert [r.info.run_id for r in named] == [run.info.run_id]  # one run, not four


def test_a_refusal_at_run_start_is_not_tried_again(proxy: FaultProxy) -> None:
    refusal = b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid value for tags"}'
    proxy.refuse("/api/2.0/mlflow/runs/create", 400, body=refusal)
    with pytest.raises(mm.exceptions.TrackingError, match="Invalid value for tags"):
        with mm.tracking_run("outage", "refused", settings=mm.Settings(tracking_uri=proxy.url)):
            pass  # pragma: no cover - never entered
    assert proxy.requests_to("/api/2.0/mlflow/runs/create") == [400]
