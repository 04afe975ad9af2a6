"""``register_model``: one idempotent call that registers in MLflow and in Michelangelo.

Order of work, chosen so that a failure never leaves more than a retry can finish:

1. Validate everything that can be validated without side effects: the Michelangelo
   backend and its dependencies, namespace, names, kind, package type, labels,
   quality metrics. Errors here are :class:`ConfigurationError` and nothing exists.
2. MLflow (:func:`_register_in_mlflow`, :mod:`._version`): find the version that
   already records this model (tag ``michelangelo_mlflow.model`` = ``<run id>/<model
   name>``, set atomically with the version; a retried task that logs its model again
   is the same model) or create it, from the LoggedModel when there is one, with the
   link tags that do not wait for the Model; wait until READY; aliases.
3. Michelangelo (:func:`_register_in_michelangelo`): create ``<model>-<version>``,
   create-only; an existing object that records the same MLflow version and run is
   accepted, anything else is a conflict.
4. MLflow: tag the version ``michelangelo.name`` (and any link tag it lacks): the
   Model exists.

The configuration is the explicit ``settings=`` when given (it always wins), else the
open tracked run's, else the environment's.

A failure in 3 or 4 raises :class:`PartialRegistrationError`; calling again with the
same arguments finds the version from 2 and completes 3 and 4.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from michelangelo_mlflow._errors import translate
from michelangelo_mlflow._registry import _backends, _model_object, _names, _version
from michelangelo_mlflow._scope import mlflow_scope
from michelangelo_mlflow._settings import Settings
from michelangelo_mlflow._tags import MODEL_VERSION_LINKS
from michelangelo_mlflow.exceptions import (
    ConfigurationError,
    MichelangeloMlflowError,
    PartialRegistrationError,
    RegistrationError,
    TrackingError,
)

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models.model import ModelInfo
    from mlflow.tracking import MlflowClient

__all__ = ["MichelangeloModelRef", "Registration", "register_model"]


@dataclass(frozen=True)
class MichelangeloModelRef:
    """A reference to the Michelangelo ``Model`` object of one MLflow version.

    Attributes:
        namespace: The Michelangelo project (Kubernetes namespace).
        name: The object's name, ``<model>-<version>``.
        revision_id: ``spec.revisionId``, the MLflow version number.
        registry_uri: ``models:/<namespace>/<model>/<version>``.
        backend: The backend that holds it: ``apiserver``, ``kubernetes`` or ``manifest``.

    Example:
        >>> ref = MichelangeloModelRef("ml-team", "fraud-detector-3", 3,
        ...                            "models:/ml-team/fraud-detector/3", "apiserver")
        >>> ref
        MichelangeloModelRef(ml-team/fraud-detector-3, revision_id=3, backend='apiserver')
    """

    namespace: str
    name: str
    revision_id: int
    registry_uri: str
    backend: str

    def __repr__(self) -> str:
        return (
            f"MichelangeloModelRef({self.namespace}/{self.name}, "
            f"revision_id={self.revision_id}, backend={self.backend!r})"
        )


@dataclass(frozen=True)
class Registration:
    """The result of :func:`register_model`.

    Attributes:
        mlflow: The MLflow ``ModelVersion`` (``status`` is ``READY``).
        michelangelo: The Michelangelo Model, or ``None`` when registration in
            Michelangelo was off.

    Example:
        >>> reg = mm.register_model(info, "fraud-detector")  # doctest: +SKIP
        >>> reg.mlflow.version, reg.michelangelo.name  # doctest: +SKIP
        ('3', 'fraud-detector-3')
    """

    mlflow: ModelVersion
    michelangelo: MichelangeloModelRef | None

    def __repr__(self) -> str:
        return (
            f"Registration(mlflow={self.mlflow.name!r} version {self.mlflow.version}, "
            f"michelangelo={self.michelangelo!r})"
        )


@dataclass(frozen=True)
class _Plan:
    """The validated Michelangelo half of a registration, before anything exists."""

    backend: _backends.Backend
    namespace: str
    model_name: str
    kind: str | None
    package_type: str | None
    labels: Mapping[str, str]
    deployable_artifact_uri: str | None
    algorithm: str | None
    training_framework: str | None
    owner: str | None
    quality_metrics: Sequence[str]


_Scores = tuple[tuple[str, float], ...]
"""Quality metrics of the run: ``(name, value)``, the primary first."""

MODEL_LINK_NAME = MODEL_VERSION_LINKS[1]
"""``michelangelo.name``: set once the Michelangelo Model exists."""


def register_model(
    model: ModelInfo | str,
    name: str,
    *,
    michelangelo: bool | None = None,
    namespace: str | None = None,
    michelangelo_name: str | None = None,
    kind: str | None = None,
    package_type: str | None = None,
    deployable_artifact_uri: str | None = None,
    algorithm: str | None = None,
    training_framework: str | None = None,
    owner: str | None = None,
    description: str | None = None,
    tags: Mapping[str, Any] | None = None,
    aliases: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    quality_metrics: Sequence[str] = (),
    settings: Settings | None = None,
) -> Registration:
    """Register a model version in MLflow and its ``Model`` object in Michelangelo.

    The MLflow version is created once per run and model name: calling again with
    the same model of the same run (a re-run notebook cell, a retried task that
    resumed its run with ``MICHELANGELO_MLFLOW_ON_RETRY=resume`` and logged the model
    again, the same model as ``ModelInfo`` or as ``runs:/`` URI) returns the existing
    version, and completes a Michelangelo registration that failed before. Another
    model name, or another run, creates the next version. The Michelangelo ``Model`` is
    named
    ``<model>-<version>`` with ``spec.revisionId`` = the MLflow version, is created
    and never overwritten, and links back to MLflow with annotations; the MLflow
    version gets ``michelangelo.*`` tags naming it.

    Registration waits until the MLflow version is READY, at most
    ``MICHELANGELO_MLFLOW_REGISTER_TIMEOUT`` seconds (default 300).

    Args:
        model: A ``ModelInfo`` from ``mlflow.<flavor>.log_model``, a ``runs:/<run>/<path>``
            or ``models:/…`` URI, or (inside an active run) an artifact path of that run.
        name: The MLflow registered model name.
        michelangelo: ``True`` requires a Michelangelo registration, ``False`` skips it,
            ``None`` registers when a backend is configured (``MICHELANGELO_MLFLOW_REGISTRY``,
            ``MA_API_SERVER``, in-cluster or a kubeconfig).
        namespace: The Michelangelo project; default ``MA_NAMESPACE``.
        michelangelo_name: The Michelangelo model name when ``name`` is not a DNS-1123
            name; default ``name``.
        kind: ``spec.kind``: ``binary_classification``, ``binary-classification`` or
            ``MODEL_KIND_BINARY_CLASSIFICATION`` (and the other CRD kinds).
        package_type: ``spec.packageType``: ``triton``, ``raw``, ``spark_pipeline``,
            ``mobile`` or the full enum name.
        deployable_artifact_uri: ``spec.deployableArtifactUri``, the packaged model.
        algorithm: ``spec.algorithm``.
        training_framework: ``spec.trainingFramework``.
        owner: ``spec.owner.name``.
        description: The MLflow version's description and ``spec.description``.
        tags: MLflow model version tags.
        aliases: MLflow aliases pointed at this version (``champion`` …).
        labels: Extra Kubernetes labels on the Model (valid label keys and values).
        quality_metrics: Names of the run's metrics to record as ``spec.qualityScores``;
            the first is primary.
        settings: The configuration; default the open tracked run's, else the
            environment's.

    Returns:
        The MLflow version and the Michelangelo reference.

    Raises:
        ConfigurationError: An argument or setting is invalid; nothing was registered.
        MissingDependencyError: The chosen backend's extra is not installed.
        RegistrationError: The MLflow registration failed.
        PartialRegistrationError: MLflow succeeded, Michelangelo did not; retry the call.

    Example:
        >>> info = mlflow.sklearn.log_model(clf, name="model")  # doctest: +SKIP
        >>> reg = mm.register_model(info, "fraud-detector", namespace="ml-team",
        ...                         kind="binary_classification")  # doctest: +SKIP
        >>> reg.michelangelo.name  # doctest: +SKIP
        'fraud-detector-1'
    """
    from michelangelo_mlflow._dependencies import import_mlflow
    from michelangelo_mlflow._run import resolve_settings

    import_mlflow()
    settings = resolve_settings(settings)
    plan = _plan(
        settings,
        name,
        michelangelo=michelangelo,
        namespace=namespace,
        michelangelo_name=michelangelo_name,
        kind=kind,
        package_type=package_type,
        labels=labels,
        deployable_artifact_uri=deployable_artifact_uri,
        details=(algorithm, training_framework, owner),
        quality_metrics=quality_metrics,
    )
    try:
        with mlflow_scope(settings) as mode:
            _refuse_routed(mode, settings, name)
            version, source, scores = _register_in_mlflow(
                model, name, settings, plan, tags=tags, description=description, aliases=aliases
            )
            if plan is None:
                return Registration(mlflow=version, michelangelo=None)
            return _register_in_michelangelo(
                plan, name, version, source, scores, settings, description
            )
    finally:
        if plan is not None:
            plan.backend.close()


def _refuse_routed(mode: str, settings: Settings, name: str) -> None:
    """Registration goes through MLflow's process-wide configuration: refuse a clash."""
    if mode != "routed":
        return
    from michelangelo_mlflow._scope import holder_description

    raise ConfigurationError(
        f"cannot register {name!r} on {settings.safe_tracking_uri} while a tracked run on "
        f"{holder_description()} in another thread holds MLflow's process-wide tracking and "
        "registry configuration: the version would be created on the wrong server",
        variable="settings",
        fix="register after that run ends, from the thread of a run on the same server, or "
        "in a separate process",
    )


def _register_in_mlflow(
    model: ModelInfo | str,
    name: str,
    settings: Settings,
    plan: _Plan | None,
    *,
    tags: Mapping[str, Any] | None,
    description: str | None,
    aliases: Sequence[str],
) -> tuple[ModelVersion, _version.Source, _Scores]:
    """The MLflow half: the version of this model, found or created, READY and described.

    The quality metrics of the Michelangelo half are read first, so that a metric the
    run did not log is an error before anything is registered.
    """
    import mlflow

    tracking_uri = settings.safe_tracking_uri

    def links(number: str) -> dict[str, str]:
        return _link_tags(plan, number, complete=False) if plan is not None else {}

    request = _version.VersionRequest(
        name=name,
        tags={key: str(value) for key, value in (tags or {}).items()},
        description=description,
        aliases=tuple(aliases),
        links=links,
        timeout=settings.register_timeout,
        tracking_uri=tracking_uri,
    )
    with _mlflow_errors(tracking_uri, name, "resolve the model"):
        client = mlflow.MlflowClient()
        source = _version.resolve(model, client)
        metrics = plan.quality_metrics if plan is not None else ()
        needs_run = _version.needs_run(source, client)
        run = client.get_run(source.run_id) if source.run_id and (metrics or needs_run) else None
        scores = _scores(run, metrics) if run is not None and metrics else ()
        if run is not None and needs_run:
            source = _version.with_logged_model(source, client, run)
    with _mlflow_errors(tracking_uri, name, f"register {source.uri}"):
        version, location = _version.mlflow_version(client, source, request)
    return version, replace(source, artifact_location=location), scores


def _register_in_michelangelo(
    plan: _Plan,
    name: str,
    version: ModelVersion,
    source: _version.Source,
    scores: _Scores,
    settings: Settings,
    description: str | None,
) -> Registration:
    """The Michelangelo half: the Model ``<model>-<version>``, linked both ways."""
    import mlflow

    tracking_uri = settings.safe_tracking_uri
    client = mlflow.MlflowClient()
    try:
        with _mlflow_errors(tracking_uri, name, "read the version's run"):
            if not scores and plan.quality_metrics and version.run_id:
                scores = _scores(client.get_run(version.run_id), plan.quality_metrics)
            artifact_uri = source.artifact_location or client.get_model_version_download_uri(
                name, version.version
            )
        obj = _model_object.build_model_object(
            _model_object.ModelObjectSpec(
                namespace=plan.namespace,
                model_name=plan.model_name,
                mlflow_name=name,
                version=str(version.version),
                run_id=version.run_id or "",
                source=version.source or source.uri,
                artifact_uri=artifact_uri,
                tracking_uri=tracking_uri,
                deployable_artifact_uri=plan.deployable_artifact_uri,
                kind=plan.kind,
                package_type=plan.package_type,
                algorithm=plan.algorithm,
                training_framework=plan.training_framework,
                description=description,
                owner=plan.owner,
                pipeline_run=settings.pipeline_run_name,
                quality_scores=scores,
                labels=plan.labels,
            )
        )
        _validate_if_possible(obj, name)
        stored = plan.backend.publish(obj, model_name=name)
        ref = _link(client, plan, name, version, str(stored["metadata"]["name"]), tracking_uri)
    except MichelangeloMlflowError as exc:
        raise _partial(exc, plan, name, version, tracking_uri) from exc
    links = _link_tags(plan, str(version.version), complete=True)
    return Registration(mlflow=_version.updated(version, tags=links), michelangelo=ref)


def _link_tags(plan: _Plan, version: str, *, complete: bool) -> dict[str, str]:
    """The tags that link an MLflow version to its Michelangelo Model.

    ``michelangelo.name`` says that the Model exists: it is set only once it does
    (``complete``). The others only name where it goes, and are sent with the
    version's create.
    """
    values = (
        plan.namespace,
        f"{plan.model_name}-{version}",
        version,
        _model_object.registry_uri(plan.namespace, plan.model_name, version),
        plan.backend.name,
    )
    return {
        key: value
        for key, value in zip(MODEL_VERSION_LINKS, values, strict=True)
        if complete or key != MODEL_LINK_NAME
    }


def _link(
    client: MlflowClient,
    plan: _Plan,
    name: str,
    version: ModelVersion,
    object_name: str,
    tracking_uri: str,
) -> MichelangeloModelRef:
    """Tag the MLflow version with its Michelangelo Model; the reference to that Model.

    Only the tags the version lacks are set: normally ``michelangelo.name`` alone, as
    the others came with the create (all of them when another registration took the
    version number expected then, or for a version made before).
    """
    ref = MichelangeloModelRef(
        namespace=plan.namespace,
        name=object_name,
        revision_id=int(version.version),
        registry_uri=_model_object.registry_uri(
            plan.namespace, plan.model_name, str(version.version)
        ),
        backend=plan.backend.name,
    )
    values = (ref.namespace, ref.name, str(ref.revision_id), ref.registry_uri, ref.backend)
    with _mlflow_errors(tracking_uri, name, "tag the version"):
        for key, value in zip(MODEL_VERSION_LINKS, values, strict=True):
            if version.tags.get(key) != value:
                client.set_model_version_tag(name, version.version, key, value)
    return ref


def _partial(
    exc: MichelangeloMlflowError,
    plan: _Plan,
    name: str,
    version: ModelVersion,
    tracking_uri: str,
) -> PartialRegistrationError:
    return PartialRegistrationError(
        f"MLflow model {name!r} version {version.version} is registered on "
        f"{tracking_uri}, but its Michelangelo Model "
        f"{plan.namespace}/{plan.model_name}-{version.version} could not be "
        f"completed on {plan.backend.location}: {exc.message}",
        model_name=name,
        mlflow_version=str(version.version),
        fix=(exc.fix + "; " if exc.fix else "")
        + "then call register_model again with the same arguments: it reuses "
        "this MLflow version and completes the Michelangelo side",
    )


def _plan(
    settings: Settings,
    name: str,
    *,
    michelangelo: bool | None,
    namespace: str | None,
    michelangelo_name: str | None,
    kind: str | None,
    package_type: str | None,
    labels: Mapping[str, str] | None,
    deployable_artifact_uri: str | None,
    details: tuple[str | None, str | None, str | None],
    quality_metrics: Sequence[str],
) -> _Plan | None:
    """Validate everything of the Michelangelo half; ``None`` when there is none to do."""
    _check_name(name)
    if michelangelo is False:
        return None
    chosen = _backend_choice(settings, michelangelo)
    if chosen is None:
        return None
    namespace = namespace or settings.namespace
    if not namespace:
        raise ConfigurationError(
            "the Michelangelo namespace (project) of the Model is not set",
            variable="MA_NAMESPACE",
            fix='pass namespace="<project>" or set MA_NAMESPACE (set in Michelangelo '
            "task pods); or pass michelangelo=False to register in MLflow only",
        )
    _names.check_namespace(namespace)
    model_name = michelangelo_name or name
    _names.check_object_name(
        model_name, argument="michelangelo_name" if michelangelo_name else "name"
    )
    for key, value in (labels or {}).items():
        _names.check_label(key, value)
    if deployable_artifact_uri is not None:
        _names.check_artifact_uri(deployable_artifact_uri, argument="deployable_artifact_uri")
    return _Plan(
        backend=_backends.open_backend(settings, chosen),
        namespace=namespace,
        model_name=model_name,
        kind=_names.normalize_kind(kind) if kind else None,
        package_type=_names.normalize_package_type(package_type) if package_type else None,
        labels=dict(labels or {}),
        deployable_artifact_uri=deployable_artifact_uri,
        algorithm=details[0],
        training_framework=details[1],
        owner=details[2],
        quality_metrics=tuple(quality_metrics),
    )


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(
            f"the registered model name {name!r} is "
            f"{'empty' if isinstance(name, str) else 'not a string'}",
            variable="name",
            fix='pass a name, such as register_model(info, "fraud-detector")',
        )


def _backend_choice(settings: Settings, michelangelo: bool | None) -> str | None:
    """The backend to use, ``None`` to skip Michelangelo, or an error saying what to set."""
    chosen = _backends.backend_name(settings)
    if chosen != "off":
        return chosen
    if michelangelo is None:
        return None
    if settings.registry_backend == "off":
        raise ConfigurationError(
            "michelangelo=True asks for a Michelangelo Model, but MICHELANGELO_MLFLOW_REGISTRY=off",
            variable="MICHELANGELO_MLFLOW_REGISTRY",
            fix="set MICHELANGELO_MLFLOW_REGISTRY to auto, apiserver, kubernetes or "
            "manifest, or pass michelangelo=False",
        )
    _backends.open_backend(settings, chosen)  # raises: says what to set
    raise AssertionError("unreachable: open_backend refuses 'off'")  # pragma: no cover


def _scores(run: Run, metrics: Sequence[str]) -> _Scores:
    """The values of the quality metrics ``metrics`` that ``run`` logged."""
    run_id = run.info.run_id
    logged = run.data.metrics
    missing = [metric for metric in metrics if metric not in logged]
    if missing:
        raise ConfigurationError(
            f"quality_metrics names {', '.join(map(repr, missing))}, which run {run_id} "
            "has not logged",
            variable="quality_metrics",
            fix=f"use metrics the run logged ({', '.join(sorted(logged)) or 'none'}), or log "
            "them before registering",
        )
    return tuple((metric, float(logged[metric])) for metric in metrics)


def _validate_if_possible(obj: Mapping[str, Any], name: str) -> None:
    """Check the object against the official message when ``michelangelo`` is installed."""
    try:
        import michelangelo.gen.api.v2.model_pb2  # noqa: F401
    except ImportError:
        return
    _model_object.to_proto(obj)


@contextlib.contextmanager
def _mlflow_errors(tracking_uri: str, name: str, what: str) -> Iterator[None]:
    """Translate MLflow failures; a generic tracking failure becomes a RegistrationError."""
    try:
        with translate(tracking_uri):
            yield
    except TrackingError as exc:
        raise RegistrationError(
            f"could not {what} for MLflow model {name!r} on {tracking_uri}: {exc.message}",
            model_name=name,
            fix=exc.fix
            or "check the model URI and that the run exists on this tracking server, then retry",
        ) from exc
