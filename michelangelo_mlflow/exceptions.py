"""Exceptions raised by michelangelo-mlflow.

Every error this SDK raises derives from one base class, and every message says
what happened, with which input, and what to do about it. Errors raised by MLflow,
``requests`` or gRPC are translated into these at one boundary and chained, so the
original is always available as ``__cause__``::

    MichelangeloMlflowError
    ├── ConfigurationError              (also a ValueError)
    ├── MissingDependencyError          (also an ImportError)
    ├── PreflightError
    │   ├── TrackingServerUnreachableError
    │   ├── AuthenticationError
    │   └── VersionMismatchError
    ├── TrackingError
    │   └── ArtifactStoreError
    └── RegistrationError
        └── PartialRegistrationError

    MichelangeloMlflowWarning           (a UserWarning)

Example:
    >>> import michelangelo_mlflow as mm
    >>> try:
    ...     mm.Settings(tracking_uri="not a uri")
    ... except mm.exceptions.ConfigurationError as exc:
    ...     print(exc.variable)
    MLFLOW_TRACKING_URI
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArtifactStoreError",
    "AuthenticationError",
    "ConfigurationError",
    "MichelangeloMlflowError",
    "MichelangeloMlflowWarning",
    "MissingDependencyError",
    "PartialRegistrationError",
    "PreflightError",
    "RegistrationError",
    "TrackingError",
    "TrackingServerUnreachableError",
    "VersionMismatchError",
]


class MichelangeloMlflowError(Exception):
    """Base class of every error raised by michelangelo-mlflow.

    Args:
        message: What happened, with which input.
        fix: What the user should do about it; appended to the message.

    Attributes:
        message: What happened.
        fix: What to do about it, or ``None``.
    """

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message}\n  fix: {fix}" if fix else message)

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take keyword-only context; rebuild from the instance's state so
        # that errors raised in Ray workers or subprocesses unpickle as themselves.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(
    cls: type[MichelangeloMlflowError], args: tuple[Any, ...], state: dict[str, Any]
) -> MichelangeloMlflowError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class MichelangeloMlflowWarning(UserWarning):
    """A configuration that works but deserves attention (version skew, insecure TLS)."""


class ConfigurationError(MichelangeloMlflowError, ValueError):
    """A setting, argument or environment variable is missing, invalid or contradictory.

    Attributes:
        variable: The environment variable or argument at fault, if there is one.
    """

    def __init__(self, message: str, *, variable: str | None = None, fix: str | None = None):
        self.variable = variable
        super().__init__(message, fix=fix)


class MissingDependencyError(MichelangeloMlflowError, ImportError):
    """An optional dependency needed for the requested feature is not installed.

    Attributes:
        requirement: The exact requirement line that installs it.
    """

    def __init__(self, feature: str, requirement: str) -> None:
        self.requirement = requirement
        super().__init__(
            f"{feature} needs a package that is not installed",
            fix=f"add `{requirement}` to the task image's requirements.txt "
            f"(or run: pip install '{requirement}')",
        )


class PreflightError(MichelangeloMlflowError):
    """The tracking server is not usable from here; raised before any run starts.

    Attributes:
        tracking_uri: The tracking URI that was checked, without credentials.
    """

    def __init__(self, message: str, *, tracking_uri: str, fix: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        super().__init__(message, fix=fix)


class TrackingServerUnreachableError(PreflightError):
    """The tracking server refused the connection, timed out or kept failing."""


class AuthenticationError(PreflightError):
    """The tracking server rejected the credentials, or none were given where needed."""


class VersionMismatchError(PreflightError):
    """The installed MLflow client and the tracking server are of incompatible versions.

    Attributes:
        client_version: The installed MLflow client version.
        server_version: The server's version, or ``None`` when it did not report one.
        pin: The requirement line that makes the client match the server.
    """

    def __init__(
        self,
        message: str,
        *,
        tracking_uri: str,
        client_version: str,
        server_version: str | None,
        pin: str | None,
        fix: str | None = None,
    ) -> None:
        self.client_version = client_version
        self.server_version = server_version
        self.pin = pin
        super().__init__(message, tracking_uri=tracking_uri, fix=fix)


class TrackingError(MichelangeloMlflowError):
    """An MLflow call failed while a run was open.

    Attributes:
        tracking_uri: The tracking URI, without credentials.
        run_id: The run being tracked, if one had started.
        error_code: MLflow's error code (``RESOURCE_DOES_NOT_EXIST`` …), if there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        tracking_uri: str,
        run_id: str | None = None,
        error_code: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.error_code = error_code
        super().__init__(message, fix=fix)


class ArtifactStoreError(TrackingError):
    """The run was logged but its artifacts could not be written or read."""


class RegistrationError(MichelangeloMlflowError):
    """A model could not be registered in MLflow or in Michelangelo.

    Attributes:
        model_name: The registered model name.
    """

    def __init__(self, message: str, *, model_name: str, fix: str | None = None) -> None:
        self.model_name = model_name
        super().__init__(message, fix=fix)


class PartialRegistrationError(RegistrationError):
    """MLflow registration succeeded, Michelangelo registration failed.

    Calling ``register_model`` again with the same arguments completes the missing
    half without creating a second MLflow version.

    Attributes:
        mlflow_version: The MLflow model version that exists.
    """

    def __init__(
        self,
        message: str,
        *,
        model_name: str,
        mlflow_version: str,
        fix: str | None = None,
    ) -> None:
        self.mlflow_version = mlflow_version
        super().__init__(message, model_name=model_name, fix=fix)
