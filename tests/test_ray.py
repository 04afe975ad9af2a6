"""michelangelo_mlflow.ray with a real local Ray and a real MLflow server.

One Ray instance (2 CPUs) serves the whole module; one Ray Train V2 fit with two
workers serves the Train tests.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import ray
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from ray.train import RunConfig, ScalingConfig
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

import michelangelo_mlflow as mm
from michelangelo_mlflow import ray as mm_ray
from michelangelo_mlflow._params import REDACTED
from michelangelo_mlflow._state import STATE
from michelangelo_mlflow._worker import CONTEXT_VARIABLE, worker_environment
from michelangelo_mlflow.exceptions import (
    AuthenticationError,
    ConfigurationError,
    MichelangeloMlflowWarning,
    MissingDependencyError,
    TrackingServerUnreachableError,
)
from michelangelo_mlflow.testing import TrackingServer
from tests._faults import closed_port, kill_on_signal, wait_for
from tests.helpers import read_as_admin

_ENV_PREFIXES = ("MLFLOW_", "MICHELANGELO_MLFLOW_", "DATABRICKS_")
RAY_TIMEOUT = 300  # seconds a ray.get may wait: a first runtime env takes a while to build
OUTAGE_STEPS = 8


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    """A local Ray whose processes inherit no MLflow variable from this process."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(_ENV_PREFIXES):
                patch.delenv(name)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


# --- what runs in the workers -----------------------------------------------------------


@ray.remote
def log_from_task(key: str, value: float) -> dict[str, Any]:
    with mm_ray.worker_run() as run:
        run.log_metric(key, value, step=1)
        return {"run_id": run.run_id, "rank": run.rank, "logging": run.logging}


@ray.remote
def log_through_the_spool(spool_dir: str) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient as Client

    with mm_ray.worker_run() as run:
        run.log_metric("via_handle", 1.0)
        Client().log_metric(run.run_id, "via_plain_client", 2.0)  # plain MLflow, same path
        writers = [p.stem for p in Path(spool_dir).glob("*.db")]  # <host>-<pid>-<random>.db
        return {"pid": os.getpid(), "writers": writers}


@ray.remote
def log_without_worker_run(run_id: str, experiment_id: str, handshake: str) -> dict[str, Any]:
    """Plain MLflow in a worker, no worker_run(): the driver's run and a run under it.

    Half the points are logged before the driver's side kills the server, half while
    it is down; the task returns as soon as it has logged them.
    """
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient as Client

    client = Client()
    child = client.create_run(experiment_id, tags={"mlflow.parentRunId": run_id}).info.run_id
    for step in range(OUTAGE_STEPS):
        if step == OUTAGE_STEPS // 2:
            Path(handshake, "logged-half").touch()
            wait_for(Path(handshake, "killed"))
        client.log_metric(run_id, "plain", float(step), step=step)
        client.log_batch(child, metrics=[Metric("own", float(step), 0, step)])
    spool_dir = Path(os.environ["MICHELANGELO_MLFLOW_SPOOL_DIR"])
    return {
        "child": child,
        "pid": os.getpid(),
        "writers": [p.stem for p in spool_dir.glob("*.db")],
        "spool_dir": str(spool_dir),
    }


@ray.remote
def fail_in_task() -> None:
    with mm_ray.worker_run() as run:
        run.log_metric("before_failure", 1.0)
        raise ValueError("worker lost its shard")


@ray.remote
def attach_without_context() -> None:
    with mm_ray.worker_run():
        pass


@ray.remote
class Scorer:
    def score(self, rows: int) -> str:
        with mm_ray.worker_run() as run:
            run.log_metrics({"rows_scored": rows, "batches": 2}, step=0)
            run.log_params({"scorer": {"threshold": 0.7}, "warehouse_password": "hunter2"})
            run.set_tags({"scored.by": "actor"})
            return run.run_id


def train_loop(config: dict[str, Any]) -> None:
    rank = ray.train.get_context().get_world_rank()
    with mm_ray.worker_run() as run, mm_ray.worker_run(per_worker=True) as every:
        run.log_params({"epochs": config["epochs"]})
        for epoch in range(config["epochs"]):
            run.log_metric("loss", 100.0 * rank + epoch, step=epoch)
            every.log_metric("throughput", 1000.0 + rank, step=epoch)
        run.set_tags({"rank.seen": str(run.rank)})


# --- plain tasks and actors -------------------------------------------------------------


@dataclass(frozen=True)
class Attached:
    """What the driver saw while its run was open, and the run as stored afterwards."""

    run_id: str
    task_saw: dict[str, Any]
    actor_saw: str
    status_while_open: str
    stored: Run


@pytest.fixture(scope="module")
def attached(tracking_server: TrackingServer) -> Attached:
    """One tracked run that a task and an actor (started together) attach to."""
    settings = mm.Settings(tracking_uri=tracking_server.url)
    client = MlflowClient(tracking_server.url)
    with mm.tracking_run("ray", "task-and-actor", settings=settings) as run:
        env = mm_ray.runtime_env()
        scorer = Scorer.options(runtime_env=env).remote()
        task_saw, actor_saw = ray.get(
            [
                log_from_task.options(runtime_env=env).remote("task_metric", 0.5),
                scorer.score.remote(1_000),
            ],
            timeout=RAY_TIMEOUT,
        )
        status_while_open = client.get_run(run.info.run_id).info.status
    stored = client.get_run(run.info.run_id)
    return Attached(run.info.run_id, task_saw, actor_saw, status_while_open, stored)


def test_a_workers_records_go_through_its_own_spool(
    tracking_server: TrackingServer, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "worker-spool"
    settings = mm.Settings(tracking_uri=tracking_server.url)
    with mm.tracking_run("ray", "worker-spool", settings=settings) as run:
        env = mm_ray.runtime_env({"env_vars": {"MICHELANGELO_MLFLOW_SPOOL_DIR": str(spool_dir)}})
        saw = ray.get(
            log_through_the_spool.options(runtime_env=env).remote(str(spool_dir)),
            timeout=RAY_TIMEOUT,
        )
    # The worker wrote its records to a spool database of its own process, then delivered them.
    assert [w.split("-")[-2] for w in saw["writers"]] == [str(saw["pid"])]
    stored = MlflowClient(tracking_server.url).get_run(run.info.run_id)
    assert stored.data.metrics == {"via_handle": 1.0, "via_plain_client": 2.0}
    assert not spool_dir.exists() or not list(spool_dir.iterdir())  # delivered: nothing left


def test_a_workers_plain_mlflow_calls_take_a_spool_through_an_outage(
    own_server: TrackingServer, tmp_path: Path
) -> None:
    """Writes outside worker_run() (Ray's setup_mlflow, a pickled Lightning logger) are kept.

    The server is down from half-way through the task until after it returned: plain
    MLflow in the worker would sit in its HTTP retries and then raise. Through the
    worker's spool the task ends at once, its storage sits in the driver's spool
    directory, and the block end waits for it: every point lands.
    """
    handshake = tmp_path / "handshake"
    handshake.mkdir()

    killer = kill_on_signal(own_server, handshake)
    settings = mm.Settings(tracking_uri=own_server.url)
    with mm.tracking_run("ray", "plain-worker", settings=settings) as run:
        info = run.info
        saw = ray.get(
            log_without_worker_run.options(runtime_env=mm_ray.runtime_env()).remote(
                info.run_id, info.experiment_id, str(handshake)
            ),
            timeout=RAY_TIMEOUT,
        )
        killer.join(10)
        assert (handshake / "killed").exists()  # the task logged its second half into an outage
        own_server.restart()
    spool_dir = Path.cwd() / ".michelangelo-mlflow-spool"
    assert saw["spool_dir"] == str(spool_dir)  # the driver's directory, made absolute
    assert str(saw["pid"]) in [w.split("-")[-2] for w in saw["writers"]]
    client = MlflowClient(own_server.url)
    expected = [(step, float(step)) for step in range(OUTAGE_STEPS)]
    for run_id, key in ((info.run_id, "plain"), (saw["child"], "own")):
        history = client.get_metric_history(run_id, key)
        assert sorted((m.step, m.value) for m in history) == expected, key
    assert client.get_run(info.run_id).info.status == "FINISHED"
    child = client.get_run(saw["child"])
    assert child.data.tags["mlflow.parentRunId"] == info.run_id
    assert child.info.status == "FINISHED"  # given the block's status by the driver


def test_a_task_attaches_to_the_driver_run(attached: Attached) -> None:
    assert attached.task_saw == {"run_id": attached.run_id, "rank": 0, "logging": True}
    assert attached.stored.data.metrics["task_metric"] == 0.5


def test_an_actor_attaches_and_logs_through_the_run_logger(attached: Attached) -> None:
    assert attached.actor_saw == attached.run_id
    data = attached.stored.data
    assert {k: data.metrics[k] for k in ("rows_scored", "batches")} == {
        "rows_scored": 1_000,
        "batches": 2,
    }
    assert data.params == {"scorer.threshold": "0.7", "warehouse_password": REDACTED}
    assert data.tags["scored.by"] == "actor"


def test_workers_leave_the_run_open_for_the_driver_to_end(attached: Attached) -> None:
    assert attached.status_while_open == "RUNNING"
    assert attached.stored.info.status == "FINISHED"


def test_a_failing_worker_fails_the_run_when_the_driver_lets_it_raise(
    settings: mm.Settings, client: MlflowClient
) -> None:
    with (
        pytest.raises(ValueError, match="worker lost its shard"),
        mm.tracking_run("ray", "failing-worker", settings=settings) as run,
    ):
        ray.get(
            fail_in_task.options(runtime_env=mm_ray.runtime_env()).remote(), timeout=RAY_TIMEOUT
        )
    stored = client.get_run(run.info.run_id)
    assert stored.info.status == "FAILED"
    assert stored.data.metrics == {"before_failure": 1.0}


def test_a_failing_worker_leaves_the_run_finished_when_the_driver_handles_it(
    settings: mm.Settings, client: MlflowClient
) -> None:
    with (
        mm.tracking_run("ray", "failing-worker", settings=settings) as run,
        pytest.raises(ValueError, match="worker lost its shard"),
    ):
        ray.get(
            fail_in_task.options(runtime_env=mm_ray.runtime_env()).remote(), timeout=RAY_TIMEOUT
        )
    stored = client.get_run(run.info.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.metrics == {"before_failure": 1.0}


def test_a_worker_without_the_runtime_env_gets_a_clear_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        ray.get(attach_without_context.remote(), timeout=RAY_TIMEOUT)
    assert CONTEXT_VARIABLE in str(info.value)
    assert "runtime_env()" in str(info.value)


# --- credentials --------------------------------------------------------------------------


@dataclass(frozen=True)
class Authenticated:
    run_id: str
    env: dict[str, Any]
    arguments: tuple[Any, ...]


def admin_settings(server: TrackingServer) -> mm.Settings:
    return mm.Settings(
        tracking_uri=server.url,
        tracking_username=server.admin_username,
        tracking_password=server.admin_password,
    )


@pytest.fixture(scope="module")
def authenticated(auth_server: TrackingServer) -> Authenticated:
    """One run on the basic-auth server that a task logs to."""
    with mm.tracking_run("ray", "auth", settings=admin_settings(auth_server)) as run:
        env = mm_ray.runtime_env()
        arguments = ("authenticated", 1.0)
        ray.get(log_from_task.options(runtime_env=env).remote(*arguments), timeout=RAY_TIMEOUT)
    return Authenticated(run.info.run_id, env, arguments)


@pytest.fixture(scope="module")
def rejected(auth_server: TrackingServer) -> BaseException:
    """What the driver gets from a worker sent no credentials: the worker is refused."""
    try:
        with mm.tracking_run("ray", "no-credentials", settings=admin_settings(auth_server)):
            env = mm_ray.runtime_env(credentials=False)
            ray.get(
                log_from_task.options(runtime_env=env).remote("never", 1.0), timeout=RAY_TIMEOUT
            )
    except Exception as exc:
        return exc
    pytest.fail("a worker without credentials logged to the basic-auth server")


def test_credentials_reach_workers_through_the_runtime_env(
    authenticated: Authenticated, auth_server: TrackingServer
) -> None:
    assert authenticated.env["env_vars"]["MLFLOW_TRACKING_PASSWORD"] == auth_server.admin_password
    stored = read_as_admin(auth_server, authenticated.run_id)
    assert stored.data.metrics == {"authenticated": 1.0}


def test_without_credentials_in_the_runtime_env_the_worker_is_rejected(
    rejected: BaseException, auth_server: TrackingServer
) -> None:
    assert isinstance(rejected, ray.exceptions.RayError)
    assert "AuthenticationError" in str(rejected)
    assert auth_server.admin_password not in str(rejected)


def test_typed_errors_raised_in_a_worker_reach_the_driver(rejected: BaseException) -> None:
    assert isinstance(rejected, AuthenticationError)


def test_the_worker_context_holds_no_secret(
    authenticated: Authenticated, auth_server: TrackingServer
) -> None:
    context = json.loads(authenticated.env["env_vars"][CONTEXT_VARIABLE])
    stored = read_as_admin(auth_server, authenticated.run_id)
    assert context == {
        "version": 1,
        "run_id": authenticated.run_id,
        "experiment_id": stored.info.experiment_id,
        "tracking_uri": auth_server.url,
    }


def test_no_secret_in_what_ray_ships_for_the_task(
    authenticated: Authenticated, auth_server: TrackingServer
) -> None:
    # What Ray exports for the task (the pickled function) and sends as its arguments.
    shipped = cloudpickle.dumps((log_from_task._function, authenticated.arguments))
    assert auth_server.admin_password.encode() not in shipped
    assert auth_server.admin_username.encode() not in shipped


def test_no_secret_in_worker_logs(
    authenticated: Authenticated, auth_server: TrackingServer
) -> None:
    # Ray's own runtime_env_agent.log records runtime envs (a Ray behaviour, see
    # docs/ray.md); no other log of the session may hold the password.
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    holding = {
        path.name
        for path in (session / "logs").rglob("*")
        if path.is_file() and auth_server.admin_password in path.read_text(errors="ignore")
    }
    assert holding <= {"runtime_env_agent.log"}, holding


# --- Ray Train V2 -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_run(tracking_server: TrackingServer, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One 2-worker DataParallelTrainer fit inside a tracked run; the stored run."""
    settings = mm.Settings(tracking_uri=tracking_server.url)
    with mm.tracking_run("ray", "train", settings=settings) as run:
        trainer = DataParallelTrainer(
            train_loop,
            train_loop_config={"epochs": 3},
            scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
            run_config=RunConfig(
                name="michelangelo-mlflow-test",
                storage_path=str(tmp_path_factory.mktemp("ray-results")),
                worker_runtime_env=mm_ray.runtime_env(),
            ),
        )
        trainer.fit()
    return MlflowClient(tracking_server.url).get_run(run.info.run_id)


def test_train_by_default_only_world_rank_0_logs(train_run: Run, client: MlflowClient) -> None:
    history = client.get_metric_history(train_run.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert train_run.data.params == {"epochs": "3"}
    assert train_run.data.tags["rank.seen"] == "0"
    assert not [key for key in train_run.data.metrics if key.startswith("loss/")]


def test_train_per_worker_logs_every_rank_under_its_own_key(
    train_run: Run, client: MlflowClient
) -> None:
    throughput = {k: v for k, v in train_run.data.metrics.items() if k.startswith("throughput")}
    assert throughput == {"throughput/rank0": 1000.0, "throughput/rank1": 1001.0}
    steps = client.get_metric_history(train_run.info.run_id, "throughput/rank1")
    assert sorted(m.step for m in steps) == [0, 1, 2]


def test_train_leaves_the_status_to_the_driver(train_run: Run) -> None:
    assert train_run.info.status == "FINISHED"


# --- in this process: the API's edges -----------------------------------------------------


def test_runtime_env_outside_a_tracked_run_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="no tracked run is open"):
        mm_ray.runtime_env()


def test_runtime_env_keeps_the_base_and_does_not_change_it(settings: mm.Settings) -> None:
    base = {"pip": ["xgboost"], "env_vars": {"OMP_NUM_THREADS": "1"}}
    with mm.tracking_run("ray", settings=settings) as run:
        env = mm_ray.runtime_env(base)
    assert base == {"pip": ["xgboost"], "env_vars": {"OMP_NUM_THREADS": "1"}}
    assert env["pip"] == ["xgboost"]
    assert env["env_vars"]["OMP_NUM_THREADS"] == "1"
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] == settings.tracking_uri
    assert run.info.run_id in env["env_vars"][CONTEXT_VARIABLE]
    assert "MLFLOW_RUN_ID" not in env["env_vars"]


def test_runtime_env_can_leave_the_credentials_out(auth_server: TrackingServer) -> None:
    with mm.tracking_run("ray", settings=admin_settings(auth_server)):
        without = mm_ray.runtime_env(credentials=False)["env_vars"]
        with_them = mm_ray.runtime_env()["env_vars"]
    assert set(with_them) - set(without) == {
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    }
    assert auth_server.admin_password not in json.dumps(without)


def test_runtime_env_refuses_a_base_built_for_another_run(settings: mm.Settings) -> None:
    with mm.tracking_run("ray", settings=settings):
        stale = mm_ray.runtime_env()
    with (
        mm.tracking_run("ray", settings=settings),
        pytest.raises(ConfigurationError, match="another run's context"),
    ):
        mm_ray.runtime_env(stale)


def test_a_context_for_an_ended_run_is_refused(
    settings: mm.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mm.tracking_run("ray", settings=settings) as run:
        environment = worker_environment()
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with (
        pytest.raises(ConfigurationError, match=f"{run.info.run_id} .* is FINISHED"),
        mm_ray.worker_run(),
    ):
        pass


def test_other_ranks_cost_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = f"http://127.0.0.1:{closed_port()}"  # refuses every connection
    context = {"version": 1, "run_id": "r1", "experiment_id": "0", "tracking_uri": nowhere}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", nowhere)
    monkeypatch.setenv("MICHELANGELO_MLFLOW_HTTP_MAX_RETRIES", "0")
    monkeypatch.setenv(CONTEXT_VARIABLE, json.dumps(context))
    with mm_ray.worker_run(rank=1) as other:
        other.log_metric("loss", 0.1, step=1)
        other.log_metrics({"a": 1.0})
        other.log_params({"lr": 0.1})
        other.set_tags({"t": "v"})
    assert (other.rank, other.logging, other.run_id) == (1, False, "r1")
    assert other._client is None
    monkeypatch.setenv("MICHELANGELO_MLFLOW_SPOOL", "off")
    with pytest.raises(TrackingServerUnreachableError), mm_ray.worker_run(rank=0):
        pass  # rank 0 does reach for the server; with the spool off, nothing keeps records


def test_rank_0_enters_while_the_server_is_down_and_keeps_its_records(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{closed_port()}"  # down, as in an outage
    context = {"version": 1, "run_id": "r-down", "experiment_id": "0", "tracking_uri": nowhere}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", nowhere)
    monkeypatch.setenv("MICHELANGELO_MLFLOW_SPOOL_GRACE", "1")
    monkeypatch.setenv("MICHELANGELO_MLFLOW_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv(CONTEXT_VARIABLE, json.dumps(context))
    with (
        pytest.warns(MichelangeloMlflowWarning, match="did not reach .* within the 1 s grace"),
        mm_ray.worker_run(rank=0) as run,
    ):
        run.log_metric("loss", 0.5, step=1)
        MlflowClient().log_metric("r-down", "plain", 1.0)
        # Read during the outage: the run as the worker knows it, with its records on top.
        seen = MlflowClient().get_run("r-down")
    assert seen.info.status == "RUNNING"
    assert seen.data.metrics == {"loss": 0.5, "plain": 1.0}
    kept = list((tmp_path / "spool").glob("*.db"))
    assert len(kept) == 1  # for `sync`, or the driver's block end on this node
    assert "r-down" not in STATE.spools  # closed by the block; nothing left open


def test_per_worker_puts_the_rank_in_metric_keys_only(monkeypatch: pytest.MonkeyPatch) -> None:
    context = {"version": 1, "run_id": "r1", "experiment_id": "0", "tracking_uri": "http://h:1"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://h:1")
    monkeypatch.setenv(CONTEXT_VARIABLE, json.dumps(context))
    assert mm_ray.worker_run(per_worker=True, rank=3).metric_key("loss") == "loss/rank3"
    assert mm_ray.worker_run(rank=3).metric_key("loss") == "loss"
    assert mm_ray.worker_run(per_worker=True, rank=3).logging is True


@pytest.mark.parametrize(
    ("context", "match"),
    [
        (None, "is not set in this process"),
        ("{not json", "is not a worker context"),
        ('{"version": 2, "run_id": "r"}', "is not a worker context"),
        (
            '{"version": 1, "run_id": "r", "experiment_id": "0", "tracking_uri": "http://b:1"}',
            "is on http://b:1",
        ),
    ],
)
def test_a_missing_or_wrong_context_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, context: str | None, match: str
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://a:1")
    if context is not None:
        monkeypatch.setenv(CONTEXT_VARIABLE, context)
    with pytest.raises(ConfigurationError, match=match) as info:
        mm_ray.worker_run()
    assert info.value.variable in {CONTEXT_VARIABLE, "MLFLOW_TRACKING_URI"}


def test_a_handle_logs_only_inside_its_block(monkeypatch: pytest.MonkeyPatch) -> None:
    context = {"version": 1, "run_id": "r1", "experiment_id": "0", "tracking_uri": "http://h:1"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://h:1")
    monkeypatch.setenv(CONTEXT_VARIABLE, json.dumps(context))
    handle = mm_ray.worker_run(rank=1)
    with pytest.raises(RuntimeError, match="is new"):
        handle.log_metric("loss", 1.0)
    with handle:
        pass
    with pytest.raises(RuntimeError, match="is closed"):
        handle.log_metric("loss", 1.0)
    with pytest.raises(RuntimeError, match="entered once"), handle:
        pass


def test_without_ray_the_module_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "michelangelo_mlflow.ray")
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError) as info:
        importlib.import_module("michelangelo_mlflow.ray")
    assert info.value.requirement == "michelangelo-mlflow[ray]"
    assert "pip install 'michelangelo-mlflow[ray]'" in str(info.value)


WITHOUT_RAY = """
import json, sys
sys.modules["ray"] = None  # `import ray` raises ImportError, as where it is not installed
import michelangelo_mlflow as mm
from michelangelo_mlflow.exceptions import ConfigurationError, MissingDependencyError

out = {}
context = sys.argv[1]
try:
    import michelangelo_mlflow.ray
except MissingDependencyError as exc:
    out["ray_module"] = exc.requirement
import os
os.environ.pop(context)
try:
    mm.worker_run()
except ConfigurationError as exc:  # typed, naming the variable: no driver run to attach to
    out["without_context"] = exc.variable
os.environ[context] = sys.argv[2]
with mm.worker_run() as run:
    run.log_metric("loss", 0.25, step=1)
    run.log_params({"optimizer": {"lr": 0.1}})
    out["handle"] = [type(run).__name__, run.run_id, run.rank, run.logging]
out["ray_imported"] = sys.modules["ray"] is not None
print(json.dumps(out))
"""


def test_worker_run_does_not_need_ray(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    with mm.tracking_run("ray", "without-ray", settings=settings) as run:
        environment = worker_environment()
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                WITHOUT_RAY,
                CONTEXT_VARIABLE,
                environment[CONTEXT_VARIABLE],
            ],
            env={**os.environ, **environment},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {
        "ray_module": "michelangelo-mlflow[ray]",
        "without_context": CONTEXT_VARIABLE,
        "handle": ["WorkerRun", run.info.run_id, 0, True],
        "ray_imported": False,
    }
    stored = client.get_run(run.info.run_id)
    assert stored.data.metrics == {"loss": 0.25}
    assert stored.data.params == {"optimizer.lr": "0.1"}
    assert stored.info.status == "FINISHED"  # the driver ended it, not the worker
