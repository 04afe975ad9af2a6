"""The MLflow half of a registration: the model version, found or created in few requests.

A registration is identified by ``<run id>/<model name>`` (tag
``michelangelo_mlflow.model``, set atomically with the version), so that a retry finds
the version it created before. With MLflow 3 and a LoggedModel the requests are:

1. ``model-versions/search``: one search over the name's versions finds the one that
   records this model (a retry), and gives the highest version number.
2. ``registered-models/create``, only when the name has no versions (a new name, as
   a rule; an existing one answers ``RESOURCE_ALREADY_EXISTS``).
3. ``model-versions/create`` from the LoggedModel's own URI ``models:/m-…`` (so MLflow
   has nothing to look up and nothing to warn about), with the run, the caller's tags,
   the identity, the description and the link tags known in advance. The answer says
   READY on a tracking server whose registry stores no files (no polling then).
4. ``logged-models/get`` and ``logged-models/tags``: the LoggedModel records the
   versions registered from it (``mlflow.modelVersions``), as after
   ``mlflow.register_model``; its artifact location is the version's download URI.

Without a LoggedModel (an MLflow 2 client or server, a model saved in the run's own
artifacts, a ``models:/<name>/<version>`` URI) the version is created by
``mlflow.register_model``, as MLflow would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from michelangelo_mlflow._tags import MODEL_IDENTITY, SOURCE
from michelangelo_mlflow.exceptions import ConfigurationError, RegistrationError

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models.model import ModelInfo
    from mlflow.tracking import MlflowClient

__all__ = ["Source", "VersionRequest", "mlflow_version", "needs_run", "resolve", "updated"]

_EXISTS = ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS")


@dataclass(frozen=True)
class Source:
    """What is being registered.

    Attributes:
        uri: The model as given (``runs:/…``, ``models:/…``): the ``…source`` tag.
        run_id: The run that logged it, when known.
        identity: ``<run id>/<model name>``, or the URI when there is no run.
        model_id: The MLflow 3 LoggedModel, when there is one.
        artifact_location: The LoggedModel's artifact location, when read already.
    """

    uri: str
    run_id: str | None
    identity: str
    model_id: str | None = None
    artifact_location: str | None = None


@dataclass(frozen=True)
class VersionRequest:
    """The version to find or create.

    Attributes:
        name: The registered model name.
        tags: The caller's tags, as strings.
        description: The version's description, or ``None``.
        aliases: Aliases to point at the version.
        links: The link tags for a version number (``{}`` without Michelangelo).
        timeout: Seconds to wait for READY.
        tracking_uri: For messages.
    """

    name: str
    tags: Mapping[str, str]
    description: str | None
    aliases: Sequence[str]
    links: Callable[[str], dict[str, str]]
    timeout: float
    tracking_uri: str


def resolve(model: ModelInfo | str, client: MlflowClient) -> Source:
    """What to register: its URI, its run, its identity and (MLflow 3) its LoggedModel."""
    if not isinstance(model, str):
        uri = getattr(model, "model_uri", None)
        if not isinstance(uri, str):
            raise ConfigurationError(
                f"cannot register a {type(model).__name__}: expected a ModelInfo, a "
                "runs:/ or models:/ URI, or an artifact path of the active run",
                variable="model",
                fix="pass the ModelInfo that mlflow.<flavor>.log_model returned",
            )
        run_id = getattr(model, "run_id", None) or None
        model_name = getattr(model, "name", None) or getattr(model, "artifact_path", None)
        identity = f"{run_id}/{model_name}" if run_id and model_name else uri
        return Source(uri, run_id, identity, getattr(model, "model_id", None) or None)
    value = model.strip()
    if value.startswith("runs:/"):
        parts = value[len("runs:/") :].strip("/").split("/", 1)
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ConfigurationError(
                f"{model!r} is not a runs:/<run_id>/<artifact_path> URI",
                variable="model",
                fix="use runs:/<run_id>/model, or pass the ModelInfo from log_model",
            )
        path = parts[1].rstrip("/")
        return Source(f"runs:/{parts[0]}/{path}", parts[0], f"{parts[0]}/{path}")
    if value.startswith("models:/m-"):  # an MLflow 3 logged model: its run and name
        logged = client.get_logged_model(value[len("models:/") :].split("/", 1)[0])
        run_id = logged.source_run_id
        identity = f"{run_id}/{logged.name}" if run_id else value
        return Source(value, run_id, identity, logged.model_id, logged.artifact_location)
    if urlsplit(value).scheme:
        return Source(value, None, value)
    return _from_artifact_path(model, value)


def _from_artifact_path(model: str, value: str) -> Source:
    import mlflow

    active = mlflow.active_run()
    if active is None:
        raise ConfigurationError(
            f"{model!r} looks like an artifact path, but no MLflow run is active",
            variable="model",
            fix="call register_model inside the tracked run that logged the model, or pass "
            "runs:/<run_id>/" + value.strip("/") + " or the ModelInfo from log_model",
        )
    run_id = str(active.info.run_id)
    path = value.strip("/")
    return Source(f"runs:/{run_id}/{path}", run_id, f"{run_id}/{path}")


def needs_run(source: Source, client: MlflowClient) -> bool:
    """Whether finding the LoggedModel of a ``runs:/`` URI needs the run (its experiment)."""
    return (
        source.model_id is None
        and source.run_id is not None
        and source.uri.startswith("runs:/")
        and hasattr(client, "search_logged_models")
    )


def with_logged_model(source: Source, client: MlflowClient, run: Run) -> Source:
    """``source`` with the LoggedModel its ``runs:/<run>/<name>`` URI names, if exactly one.

    MLflow 3 keeps a model's files with its LoggedModel, not in the run's artifacts:
    registering the ``runs:/`` URI makes MLflow search for it and warn. A server
    without LoggedModels (MLflow 2), none of that name in the run, or several (MLflow
    picks by step) leave ``source`` unchanged: ``mlflow.register_model`` decides.
    """
    from mlflow.exceptions import MlflowException

    name = source.uri.split("/", 3)[-1]
    quoted = name.replace("\\", "\\\\").replace("'", "\\'")
    try:
        found = client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"name = '{quoted}'"
        )
    except MlflowException as exc:
        if exc.error_code in ("ENDPOINT_NOT_FOUND", "NOT_IMPLEMENTED"):
            return source
        raise
    mine = [m for m in found if m.source_run_id == source.run_id and m.name == name]
    if len(mine) != 1 or found.token:
        return source
    return replace(source, model_id=mine[0].model_id, artifact_location=mine[0].artifact_location)


def mlflow_version(
    client: MlflowClient, source: Source, request: VersionRequest
) -> tuple[ModelVersion, str | None]:
    """The version of this model, found or created, READY, tagged and described.

    Returns:
        The version (as this call left it) and its download URI when known.
    """
    name = request.name
    existing, highest = _find_existing(client, name, source)
    if highest == 0:  # no versions: perhaps no registered model either
        _create_registered_model(client, name)
    if existing is None:
        version, location = _create(client, source, request, str(highest + 1))
    else:
        version, location = existing, _location(client, source, existing)
        for key, value in request.tags.items():
            if version.tags.get(key) != value:
                client.set_model_version_tag(name, version.version, key, value)
        version = updated(version, tags=request.tags)
    version = _wait_ready(client, version, request)
    if request.description is not None and version.description != request.description:
        version = client.update_model_version(
            name, version.version, description=request.description
        )
    for alias in request.aliases:
        client.set_registered_model_alias(name, alias, version.version)
    return updated(version, aliases=request.aliases), location


def _location(client: MlflowClient, source: Source, version: ModelVersion) -> str | None:
    """The download URI of a version found again: its LoggedModel's artifacts, if it has one."""
    if source.model_id is None or version.source != f"models:/{source.model_id}":
        return None
    return source.artifact_location or str(
        client.get_logged_model(source.model_id).artifact_location
    )


def _create_registered_model(client: MlflowClient, name: str) -> None:
    """Create the registered model, unless it exists already (without versions)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in _EXISTS:
            raise


def _find_existing(
    client: MlflowClient, name: str, source: Source
) -> tuple[ModelVersion | None, int]:
    """The version that records this model already (a retry), and the highest number."""
    quoted = name.replace("\\", "\\\\").replace("'", "\\'")
    versions = [v for v in client.search_model_versions(f"name = '{quoted}'") if v.name == name]
    matches = [
        v
        for v in versions
        if v.status != "FAILED_REGISTRATION"
        and (
            v.tags.get(MODEL_IDENTITY) == source.identity
            or (MODEL_IDENTITY not in v.tags and v.tags.get(SOURCE) == source.uri)
        )
    ]
    highest = max((int(v.version) for v in versions), default=0)
    return (min(matches, key=lambda v: int(v.version)) if matches else None), highest


def _create(
    client: MlflowClient, source: Source, request: VersionRequest, expected: str
) -> tuple[ModelVersion, str | None]:
    """Create the version; from the LoggedModel when there is one (no warning, no search).

    ``expected`` is the version number MLflow will most likely give (the highest + 1):
    the link tags that name it are sent with the create; :func:`_register._link`
    corrects them when another registration took that number first.
    """
    marks = {MODEL_IDENTITY: source.identity, SOURCE: source.uri}
    tags = {**request.tags, **request.links(expected), **marks}
    if source.model_id is None:
        import mlflow

        version = mlflow.register_model(
            source.uri, request.name, await_registration_for=0, tags=tags
        )
        return version, None
    version = client.create_model_version(
        request.name,
        f"models:/{source.model_id}",
        run_id=source.run_id,
        tags=tags,
        description=request.description,
        await_creation_for=0,
        model_id=source.model_id,
    )
    return version, _record_on_logged_model(client, source.model_id, version)


def _record_on_logged_model(client: MlflowClient, model_id: str, version: ModelVersion) -> str:
    """Add the version to the LoggedModel's ``mlflow.modelVersions``; its artifact location.

    The tag is the one ``mlflow.register_model`` keeps: a JSON list of
    ``{"name", "version"}`` that the MLflow UI shows on the LoggedModel's page.
    """
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    logged = client.get_logged_model(model_id)
    entries: list[Any] = [{"name": version.name, "version": version.version}]
    if previous := logged.tags.get(MLFLOW_MODEL_VERSIONS):
        entries = json.loads(previous) + entries
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(entries)})
    return str(logged.artifact_location)


def _wait_ready(
    client: MlflowClient, version: ModelVersion, request: VersionRequest
) -> ModelVersion:
    deadline = time.monotonic() + request.timeout
    delay = 0.1
    while version.status != "READY":
        if version.status == "FAILED_REGISTRATION":
            raise RegistrationError(
                f"MLflow failed to register {version.name!r} version {version.version} on "
                f"{request.tracking_uri}: {version.status_message or 'no reason given'}",
                model_name=version.name,
                fix="check that the model's artifacts exist and are readable by the "
                "tracking server, then retry (a new version is created)",
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RegistrationError(
                f"MLflow model {version.name!r} version {version.version} on "
                f"{request.tracking_uri} is still {version.status} after {request.timeout:g} s",
                model_name=version.name,
                fix="raise MICHELANGELO_MLFLOW_REGISTER_TIMEOUT, then call register_model "
                "again with the same arguments: it waits for this same version",
            )
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 2.0)
        version = client.get_model_version(version.name, version.version)
    return version


def updated(
    version: ModelVersion,
    *,
    tags: Mapping[str, str] | None = None,
    aliases: Sequence[str] = (),
) -> ModelVersion:
    """``version`` with ``tags`` and ``aliases`` added, as the server now has it.

    Saves reading the version back after setting them.
    """
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.protos.model_registry_pb2 import ModelVersionTag

    if not tags and not aliases:
        return version
    proto = version.to_proto()  # type: ignore[no-untyped-call]
    merged = {**version.tags, **(tags or {})}
    del proto.tags[:]
    proto.tags.extend(ModelVersionTag(key=k, value=v) for k, v in merged.items())
    proto.aliases.extend(a for a in dict.fromkeys(aliases) if a not in proto.aliases)
    return ModelVersion.from_proto(proto)
