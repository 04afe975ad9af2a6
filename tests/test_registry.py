"""register_model: the MLflow side, the Model object builder and the manifest backend."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

import michelangelo_mlflow as mm
from michelangelo_mlflow._registry import Registration, _model_object, _names, register_model
from michelangelo_mlflow._scope import mlflow_scope
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow._tags import SOURCE as SOURCE_TAG
from michelangelo_mlflow.exceptions import (
    ConfigurationError,
    PartialRegistrationError,
    RegistrationError,
)
from michelangelo_mlflow.testing import TrackingServer
from tests.helpers.registry import (
    assert_strict_valid,
    k8s_is_dns1123_subdomain,
    k8s_is_label_value,
    k8s_is_qualified_name,
    unique,
)

# No deadline on the property tests: one example takes microseconds, but the first pays
# for imports and regex compilation, and a machine loaded by real MLflow servers and Ray
# stalls now and then; a deadline would only add flaky failures.
NO_DEADLINE = settings(deadline=None)


def versions(server: TrackingServer, name: str) -> list[Any]:
    with mlflow_scope(Settings(tracking_uri=server.url)):
        return list(MlflowClient().search_model_versions(f"name = '{name}'"))


@pytest.fixture
def manifest_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Choose the manifest backend the way a task pod does: by its environment variable."""
    monkeypatch.setenv("MICHELANGELO_MLFLOW_REGISTRY", "manifest")


def manifest_settings(server: TrackingServer, tmp_path: Path, **extra: Any) -> Settings:
    """Settings of the manifest backend (needs the ``manifest_backend`` fixture)."""
    return Settings(
        tracking_uri=server.url,
        manifest_dir=str(tmp_path / "models"),
        namespace="ml-team",
        **extra,
    )


# --- MLflow side ------------------------------------------------------------------------


def test_model_info_registers_a_ready_version_with_tags_description_and_aliases(
    tracking_server: TrackingServer, logged_model: Any
) -> None:
    name = unique()
    reg = register_model(
        logged_model,
        name,
        michelangelo=False,
        tags={"team": "fraud", "stage": 1},
        description="baseline",
        aliases=["champion"],
        settings=Settings(tracking_uri=tracking_server.url),
    )
    assert isinstance(reg, Registration)
    assert reg.michelangelo is None
    assert (reg.mlflow.name, reg.mlflow.version, reg.mlflow.status) == (name, "1", "READY")
    assert reg.mlflow.run_id == logged_model.run_id
    assert reg.mlflow.description == "baseline"
    assert reg.mlflow.tags["team"] == "fraud"
    assert reg.mlflow.tags["stage"] == "1"
    assert reg.mlflow.tags[SOURCE_TAG] == logged_model.model_uri
    assert reg.mlflow.aliases == ["champion"]


def test_the_same_call_twice_returns_the_same_version(
    tracking_server: TrackingServer, logged_model: Any
) -> None:
    name = unique()
    settings = Settings(tracking_uri=tracking_server.url)
    first = register_model(logged_model, name, michelangelo=False, settings=settings)
    second = register_model(logged_model, name, michelangelo=False, settings=settings)
    assert second.mlflow.version == first.mlflow.version == "1"
    assert len(versions(tracking_server, name)) == 1


def test_the_same_model_by_another_uri_is_the_same_version(
    tracking_server: TrackingServer, logged_model: Any
) -> None:
    name = unique()
    settings = Settings(tracking_uri=tracking_server.url)
    first = register_model(logged_model, name, michelangelo=False, settings=settings)
    runs_uri = f"runs:/{logged_model.run_id}/model"
    second = register_model(runs_uri, name, michelangelo=False, settings=settings)
    again = register_model(runs_uri + "/", name, michelangelo=False, settings=settings)
    assert (first.mlflow.version, second.mlflow.version, again.mlflow.version) == ("1", "1", "1")
    assert second.mlflow.tags["michelangelo_mlflow.model"] == f"{logged_model.run_id}/model"


def test_another_model_of_the_run_is_the_next_version(
    tracking_server: TrackingServer, logged_model: Any
) -> None:
    name = unique()
    settings = Settings(tracking_uri=tracking_server.url)
    first = register_model(logged_model, name, michelangelo=False, settings=settings)
    with mlflow_run_on(tracking_server, logged_model.run_id):
        from sklearn.linear_model import LogisticRegression

        classifier = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
        other = mlflow.sklearn.log_model(classifier, name="challenger")
    second = register_model(other, name, michelangelo=False, settings=settings)
    assert (first.mlflow.version, second.mlflow.version) == ("1", "2")
    assert second.mlflow.run_id == logged_model.run_id


def test_a_models_uri_of_another_registered_version_registers(
    tracking_server: TrackingServer, logged_model: Any
) -> None:
    settings = Settings(tracking_uri=tracking_server.url)
    base = register_model(logged_model, unique(), michelangelo=False, settings=settings)
    copy_name = unique("copy")
    uri = f"models:/{base.mlflow.name}/{base.mlflow.version}"
    reg = register_model(uri, copy_name, michelangelo=False, settings=settings)
    assert reg.mlflow.status == "READY"
    assert (
        register_model(uri, copy_name, michelangelo=False, settings=settings).mlflow.version == "1"
    )


def test_an_artifact_path_registers_from_the_active_run(tracking_server: TrackingServer) -> None:
    from sklearn.dummy import DummyClassifier

    name = unique()
    settings = Settings(tracking_uri=tracking_server.url)
    with mlflow_scope(settings), mlflow.start_run() as run:
        mlflow.sklearn.log_model(DummyClassifier().fit([[0], [1]], [0, 1]), name="clf")
        reg = register_model("clf", name, michelangelo=False)
    assert reg.mlflow.run_id == run.info.run_id
    assert reg.mlflow.tags[SOURCE_TAG] == f"runs:/{run.info.run_id}/clf"


class MlflowWarnings(logging.Handler):
    """Collects what MLflow logs at WARNING and above (its logger does not propagate)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def mlflow_warnings() -> Iterator[MlflowWarnings]:
    handler = MlflowWarnings()
    logger = logging.getLogger("mlflow")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("form", ["runs_uri", "artifact_path"])
def test_a_run_uri_registers_from_its_logged_model_without_a_warning(
    tracking_server: TrackingServer, mlflow_warnings: MlflowWarnings, form: str
) -> None:
    """MLflow 3 warns "Run … has no artifacts at artifact path 'model'" for runs:/ URIs."""
    from sklearn.dummy import DummyClassifier

    name = unique()
    with mlflow_scope(Settings(tracking_uri=tracking_server.url)), mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(DummyClassifier().fit([[0], [1]], [0, 1]), name="model")
        model = f"runs:/{run.info.run_id}/model" if form == "runs_uri" else "model"
        before = len(mlflow_warnings.messages)  # log_model may warn (no signature)
        reg = register_model(model, name, michelangelo=False)
    assert mlflow_warnings.messages[before:] == []
    assert (reg.mlflow.source, reg.mlflow.run_id) == (info.model_uri, run.info.run_id)
    assert reg.mlflow.tags[SOURCE_TAG] == f"runs:/{run.info.run_id}/model"


def test_a_version_is_what_mlflow_register_model_makes_of_the_same_model(
    tracking_server: TrackingServer, logged_model: Any, mlflow_warnings: MlflowWarnings
) -> None:
    """Differential: the same model registered by MLflow alone and by this SDK."""
    settings = Settings(tracking_uri=tracking_server.url)
    ours = register_model(logged_model, unique(), michelangelo=False, settings=settings).mlflow
    with mlflow_scope(settings):
        client = MlflowClient()
        theirs = mlflow.register_model(logged_model.model_uri, unique("mlflow"))
        logged = client.get_logged_model(logged_model.model_id)
        stored = client.get_model_version(ours.name, ours.version)
        download = (
            client.get_model_version_download_uri(ours.name, ours.version),
            client.get_model_version_download_uri(theirs.name, theirs.version),
        )
    assert mlflow_warnings.messages == []
    fields = ("version", "source", "run_id", "status", "model_id")
    assert [getattr(ours, f) for f in fields] == [getattr(theirs, f) for f in fields]
    assert [getattr(stored, f) for f in fields] == [getattr(ours, f) for f in fields]
    assert stored.tags == ours.tags  # what register_model returned is what the server has
    assert download[0] == download[1] == logged.artifact_location
    recorded = json.loads(logged.tags["mlflow.modelVersions"])  # the LoggedModel's back-links
    assert {"name": ours.name, "version": ours.version} in recorded
    assert {"name": theirs.name, "version": theirs.version} in recorded


def test_an_artifact_path_outside_a_run_is_a_configuration_error(
    tracking_server: TrackingServer,
) -> None:
    with pytest.raises(ConfigurationError, match="no MLflow run is active") as info:
        register_model("model", unique(), settings=Settings(tracking_uri=tracking_server.url))
    assert "runs:/<run_id>/model" in str(info.value)


def test_a_missing_run_is_a_registration_error_with_its_cause(
    tracking_server: TrackingServer,
) -> None:
    name = unique()
    with pytest.raises(RegistrationError, match=name) as info:
        register_model(
            "runs:/0123456789abcdef0123456789abcdef/model",
            name,
            michelangelo=False,
            settings=Settings(tracking_uri=tracking_server.url),
        )
    assert info.value.__cause__ is not None
    assert info.value.fix


def test_a_bad_runs_uri_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="runs:/<run_id>/<artifact_path>"):
        register_model("runs:/only-a-run", "m", michelangelo=False)


def test_mlflow_registry_uri_sends_the_version_to_that_registry(
    tracking_server: TrackingServer,
    logged_model: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    registry = f"sqlite:///{tmp_path / 'registry.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", registry)
    name = unique()
    reg = register_model(logged_model, name, michelangelo=False)
    assert (str(reg.mlflow.version), reg.mlflow.status) == ("1", "READY")  # sqlite: int
    elsewhere = MlflowClient(tracking_uri=tracking_server.url, registry_uri=registry)
    stored = elsewhere.get_model_version(name, "1")
    assert (stored.run_id, stored.tags[SOURCE_TAG]) == (logged_model.run_id, logged_model.model_uri)
    # The tracking server's own registry never saw it, and MLflow's global is restored.
    server = MlflowClient(tracking_uri=tracking_server.url, registry_uri=tracking_server.url)
    assert server.search_model_versions(f"name = '{name}'") == []
    monkeypatch.delenv("MLFLOW_REGISTRY_URI")
    assert mlflow.get_registry_uri() != registry  # no MLflow global left pointing there


# --- choosing the Michelangelo side -----------------------------------------------------


def test_auto_without_a_backend_registers_in_mlflow_only(
    tracking_server: TrackingServer,
    logged_model: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config of this machine
    reg = register_model(
        logged_model, unique(), settings=Settings(tracking_uri=tracking_server.url)
    )
    assert reg.michelangelo is None
    assert not any(key.startswith("michelangelo.") for key in reg.mlflow.tags)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "MICHELANGELO_MLFLOW_REGISTRY"),
        ({"MICHELANGELO_MLFLOW_REGISTRY": "off"}, "MICHELANGELO_MLFLOW_REGISTRY"),
        ({"MICHELANGELO_MLFLOW_REGISTRY": "manifest"}, "MA_NAMESPACE"),
        (
            {"MICHELANGELO_MLFLOW_REGISTRY": "manifest", "MA_NAMESPACE": "Not_A_Namespace"},
            "MA_NAMESPACE",
        ),
        ({"MICHELANGELO_MLFLOW_REGISTRY": "apiserver", "MA_NAMESPACE": "ml-team"}, "MA_API_SERVER"),
    ],
)
def test_michelangelo_true_needs_a_configured_backend_and_registers_nothing(
    tracking_server: TrackingServer,
    logged_model: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: dict[str, str],
    variable: str,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config of this machine
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    name = unique()
    with pytest.raises(ConfigurationError) as info:
        register_model(
            logged_model,
            name,
            michelangelo=True,
            settings=Settings(tracking_uri=tracking_server.url),
        )
    assert info.value.variable == variable
    assert info.value.fix
    assert versions(tracking_server, name) == []


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"michelangelo_name": "Fraud_Detector"}, "michelangelo_name='fraud-detector'"),
        ({"kind": "binary"}, "binary_classification"),
        ({"package_type": "onnx"}, "triton"),
        ({"labels": {"team": "fraud detection"}}, "team"),
        ({"labels": {"bad key!": "x"}}, "bad key!"),
        ({"quality_metrics": ["f1"]}, "auc, logloss"),
    ],
)
@pytest.mark.usefixtures("manifest_backend")
def test_invalid_michelangelo_arguments_fail_before_mlflow(
    tracking_server: TrackingServer,
    logged_model: Any,
    tmp_path: Path,
    arguments: dict[str, Any],
    match: str,
) -> None:
    name = unique()
    with pytest.raises(ConfigurationError, match=match):
        register_model(
            logged_model, name, settings=manifest_settings(tracking_server, tmp_path), **arguments
        )
    assert versions(tracking_server, name) == []


@pytest.mark.usefixtures("manifest_backend")
def test_an_invalid_mlflow_name_says_how_to_fix_it(
    tracking_server: TrackingServer, logged_model: Any, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match="DNS-1123") as info:
        register_model(
            logged_model, "Fraud Detector", settings=manifest_settings(tracking_server, tmp_path)
        )
    assert info.value.variable == "name"
    assert "michelangelo_name='fraud-detector'" in str(info.value)


# --- the manifest backend -----------------------------------------------------------------


@pytest.mark.usefixtures("manifest_backend")
def test_manifest_backend_writes_a_strictly_valid_model_object(
    tracking_server: TrackingServer, logged_model: Any, tmp_path: Path
) -> None:
    name = unique("fraud")
    settings = manifest_settings(tracking_server, tmp_path, pipeline_run_name="train-7")
    reg = register_model(
        logged_model,
        name,
        kind="binary-classification",
        package_type="triton",
        deployable_artifact_uri="s3://bucket/fraud/1/",
        algorithm="logistic_regression",
        training_framework="sklearn",
        owner="alice",
        description="baseline",
        labels={"team": "fraud"},
        quality_metrics=["auc", "logloss"],
        settings=settings,
    )
    assert reg.michelangelo is not None
    assert (reg.michelangelo.namespace, reg.michelangelo.name) == ("ml-team", f"{name}-1")
    assert reg.michelangelo.revision_id == 1
    assert reg.michelangelo.registry_uri == f"models:/ml-team/{name}/1"
    path = tmp_path / "models" / "ml-team" / f"{name}-1.yaml"
    obj = yaml.safe_load(path.read_text())
    assert_strict_valid(obj)
    spec = obj["spec"]
    assert spec["revisionId"] == 1
    assert spec["kind"] == "MODEL_KIND_BINARY_CLASSIFICATION"
    assert spec["packageType"] == "DEPLOYABLE_MODEL_PACKAGE_TYPE_TRITON"
    assert spec["deployableArtifactUri"] == ["s3://bucket/fraud/1/"]
    assert spec["modelArtifactUri"][0].endswith(logged_model.model_id + "/artifacts")
    assert spec["sourcePipelineRun"] == {"namespace": "ml-team", "name": "train-7"}
    assert spec["owner"] == {"name": "alice"}
    assert [(s["name"], s["value"], s["primary"]) for s in spec["qualityScores"]] == [
        ("auc", 0.91, True),
        ("logloss", 0.3, False),
    ]
    annotations = obj["metadata"]["annotations"]
    assert annotations[_model_object.A_TRACKING_URI] == tracking_server.url
    assert annotations[_model_object.A_RUN_ID] == logged_model.run_id
    assert annotations[_model_object.A_MODEL_URI] == f"models:/{name}/1"
    assert obj["metadata"]["labels"]["team"] == "fraud"
    tags = reg.mlflow.tags
    assert tags["michelangelo.namespace"] == "ml-team"
    assert tags["michelangelo.name"] == f"{name}-1"
    assert tags["michelangelo.revision_id"] == "1"
    assert tags["michelangelo.backend"] == "manifest"


def test_manifest_backend_and_directory_come_from_the_environment(
    tracking_server: TrackingServer,
    logged_model: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    directory = tmp_path / "from-env"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    monkeypatch.setenv("MICHELANGELO_MLFLOW_REGISTRY", "manifest")
    monkeypatch.setenv("MICHELANGELO_MLFLOW_MANIFEST_DIR", str(directory))
    monkeypatch.setenv("MA_NAMESPACE", "ml-team")
    name = unique()
    reg = register_model(logged_model, name)  # no settings: the environment's
    assert reg.michelangelo is not None
    assert reg.michelangelo.backend == "manifest"
    written = directory / "ml-team" / f"{name}-1.yaml"
    assert_strict_valid(yaml.safe_load(written.read_text()))
    assert not (tmp_path / "michelangelo-models").exists()  # not the default directory


@pytest.mark.usefixtures("manifest_backend")
def test_manifest_retry_keeps_one_version_and_one_file(
    tracking_server: TrackingServer, logged_model: Any, tmp_path: Path
) -> None:
    name = unique()
    settings = manifest_settings(tracking_server, tmp_path)
    first = register_model(logged_model, name, settings=settings)
    path = tmp_path / "models" / "ml-team" / f"{name}-1.yaml"
    written = path.read_bytes()
    second = register_model(logged_model, name, settings=settings)
    assert first.michelangelo == second.michelangelo
    assert len(versions(tracking_server, name)) == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert path.read_bytes() == written


@pytest.mark.usefixtures("manifest_backend")
def test_a_conflicting_manifest_is_never_overwritten(
    tracking_server: TrackingServer, logged_model: Any, tmp_path: Path
) -> None:
    name = unique()
    path = tmp_path / "models" / "ml-team" / f"{name}-1.yaml"
    path.parent.mkdir(parents=True)
    foreign = {
        "apiVersion": "michelangelo.api/v2",
        "kind": "Model",
        "metadata": {
            "name": f"{name}-1",
            "namespace": "ml-team",
            "annotations": {_model_object.A_NAME: "other", _model_object.A_VERSION: "1"},
        },
        "spec": {"revisionId": 1},
    }
    path.write_text(yaml.safe_dump(foreign))
    with pytest.raises(PartialRegistrationError, match=f"ml-team/{name}-1") as info:
        register_model(logged_model, name, settings=manifest_settings(tracking_server, tmp_path))
    assert info.value.mlflow_version == "1"
    assert "'other'" in str(info.value)
    assert isinstance(info.value.__cause__, RegistrationError)
    assert yaml.safe_load(path.read_text()) == foreign


@pytest.mark.usefixtures("manifest_backend")
def test_manifest_to_stdout(
    tracking_server: TrackingServer, logged_model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique()
    settings = Settings(tracking_uri=tracking_server.url, manifest_dir="-", namespace="ns1")
    register_model(logged_model, name, settings=settings)
    documents = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert [d["metadata"]["name"] for d in documents] == [f"{name}-1"]
    assert_strict_valid(documents[0])


@pytest.mark.usefixtures("manifest_backend")
def test_the_tracking_uri_annotation_has_no_credentials(
    tracking_server: TrackingServer, logged_model: Any, tmp_path: Path
) -> None:
    url = tracking_server.url.replace("http://", "http://alice:s3cr3t@")
    settings = Settings(tracking_uri=url, manifest_dir=str(tmp_path), namespace="ns1")
    name = unique()
    register_model(logged_model, name, settings=settings)
    text = (tmp_path / "ns1" / f"{name}-1.yaml").read_text()
    assert "s3cr3t" not in text
    assert "alice" not in text
    assert f"tracking-uri: {tracking_server.url}" in text


# --- the builder and the name rules ------------------------------------------------------


def full_spec(**changes: Any) -> _model_object.ModelObjectSpec:
    values: dict[str, Any] = {
        "namespace": "ml-team",
        "model_name": "fraud-detector",
        "mlflow_name": "Fraud Detector (prod)",
        "version": "12",
        "run_id": "0123456789abcdef0123456789abcdef",
        "source": "models:/m-1",
        "artifact_uri": "s3://bucket/1/models/m-1/artifacts",
        "tracking_uri": "https://mlflow.example.com",
        "deployable_artifact_uri": "s3://bucket/deploy/12/",
        "kind": "MODEL_KIND_REGRESSION",
        "package_type": "DEPLOYABLE_MODEL_PACKAGE_TYPE_RAW",
        "algorithm": "xgboost",
        "training_framework": "xgboost",
        "description": "d",
        "owner": "alice",
        "pipeline_run": "run-1",
        "quality_scores": (("rmse", 0.5),),
        "labels": {"team": "fraud"},
    }
    values.update(changes)
    return _model_object.ModelObjectSpec(**values)


def test_the_builder_output_is_strictly_valid_and_labels_only_valid_values() -> None:
    obj = _model_object.build_model_object(full_spec())
    assert_strict_valid(obj)
    labels = obj["metadata"]["labels"]
    assert _model_object.A_NAME not in labels  # "Fraud Detector (prod)" is no label value
    assert labels[_model_object.A_VERSION] == "12"
    assert obj["metadata"]["annotations"][_model_object.A_NAME] == "Fraud Detector (prod)"
    assert all(k8s_is_qualified_name(k) and k8s_is_label_value(v) for k, v in labels.items())
    message = _model_object.to_proto(obj)
    assert message.spec.revision_id == 12
    assert _model_object.from_proto(message) == obj


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("binary_classification", "MODEL_KIND_BINARY_CLASSIFICATION"),
        ("binary-classification", "MODEL_KIND_BINARY_CLASSIFICATION"),
        ("MODEL_KIND_BINARY_CLASSIFICATION", "MODEL_KIND_BINARY_CLASSIFICATION"),
        ("Regression", "MODEL_KIND_REGRESSION"),
        ("llm-chat-completion", "MODEL_KIND_LLM_CHAT_COMPLETION"),
    ],
)
def test_kind_accepts_enum_names_and_short_forms(given: str, expected: str) -> None:
    assert _names.normalize_kind(given) == expected


@pytest.mark.parametrize("invalid", ["invalid", "MODEL_KIND_INVALID", "binary"])
def test_kind_rejects_unknown_and_invalid(invalid: str) -> None:
    with pytest.raises(ConfigurationError, match="binary_classification"):
        _names.normalize_kind(invalid)


def test_package_type_short_forms() -> None:
    assert _names.normalize_package_type("spark-pipeline") == (
        "DEPLOYABLE_MODEL_PACKAGE_TYPE_SPARK_PIPELINE"
    )


# Strings near the rules' edges: the characters they treat specially, and some others.
EDGY = st.text(alphabet="az09AZ-._/ é", max_size=70) | st.text(max_size=300)


@NO_DEADLINE
@given(EDGY)
@example("0:.0")  # a label may not end in '-' before a dot (found by Hypothesis)
@example("a-.b")
@example("x" * 300)
def test_suggested_names_are_always_valid_model_names(value: str) -> None:
    suggested = _names.suggest_name(value)
    # Model objects are <model>-<version>: valid even with a ten-digit version.
    assert k8s_is_dns1123_subdomain(f"{suggested}-{'9' * 10}")
    _names.check_object_name(suggested, argument="name")  # and the SDK agrees


@NO_DEADLINE
@given(EDGY)
@example("a" * 253)
@example("a" * 254)
@example("a..b")
def test_object_names_match_the_kubernetes_rule(value: str) -> None:
    assert _names.is_subdomain(value) == k8s_is_dns1123_subdomain(value)


@NO_DEADLINE
@given(EDGY)
@example("a" * 63)
@example("a" * 64)
@example("")
def test_label_values_match_the_kubernetes_rule(value: str) -> None:
    assert _names.is_label_value(value) == k8s_is_label_value(value)


@NO_DEADLINE
@given(EDGY)
@example("michelangelo.ai/model-name")
@example("a/b/c")
@example("/team")
def test_label_keys_match_the_kubernetes_rule(key: str) -> None:
    assert _names.is_qualified_name(key) == k8s_is_qualified_name(key)


def test_a_label_key_with_an_empty_prefix_is_invalid() -> None:
    assert not k8s_is_qualified_name("/team")
    with pytest.raises(ConfigurationError, match="label key"):
        _names.check_label("/team", "fraud")


@contextlib.contextmanager
def mlflow_run_on(server: TrackingServer, run_id: str) -> Iterator[None]:
    """Reopen a run of ``server`` with plain MLflow, and end it again."""
    with mm.tracking_run(run_id=run_id, settings=Settings(tracking_uri=server.url)):
        yield
