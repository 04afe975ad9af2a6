"""The interface of a Michelangelo Model backend: create and read, never update.

A backend creates a Model object and reads one back; it never updates or deletes.
:meth:`Backend.publish` adds the create-only, idempotent rule on top: on "already
exists" it reads the existing object and accepts it only when it records the same
MLflow registration (name, version, run), so a retried registration succeeds and
another registration is never overwritten.

The backends (``_backends``, ``_apiserver``, ``_kubernetes``) import this module; it
imports none of them, so the factory in ``_backends`` can import every backend.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from michelangelo_mlflow._registry import _model_object
from michelangelo_mlflow.exceptions import RegistrationError

__all__ = ["AlreadyExists", "Backend"]


class AlreadyExists(Exception):
    """A Model of this name exists already (gRPC ALREADY_EXISTS, HTTP 409, file exists)."""


class Backend(abc.ABC):
    """Create and read Michelangelo Model objects; never update or delete them.

    Subclasses implement :meth:`create` and :meth:`get` and translate their foreign
    errors to :class:`~michelangelo_mlflow.exceptions.RegistrationError`.

    Attributes:
        name: The backend's name, as in ``MICHELANGELO_MLFLOW_REGISTRY``.
        location: Where objects go, for messages.
    """

    name: str = ""
    location: str = ""

    @abc.abstractmethod
    def create(self, obj: Mapping[str, Any], *, model_name: str) -> dict[str, Any]:
        """Create the object and return it as stored.

        Raises:
            AlreadyExists: An object of this name exists.
            RegistrationError: Any other failure.
        """

    @abc.abstractmethod
    def get(self, namespace: str, name: str, *, model_name: str) -> dict[str, Any] | None:
        """The stored object, or ``None`` when there is none.

        Raises:
            RegistrationError: Any failure other than "not found".
        """

    def close(self) -> None:  # noqa: B027 -- optional hook
        """Release connections."""

    def publish(self, obj: Mapping[str, Any], *, model_name: str) -> dict[str, Any]:
        """Create ``obj``, or accept an existing object that records the same registration.

        Args:
            obj: The Model object.
            model_name: The MLflow registered model name, for errors.

        Returns:
            The object as stored (the existing one on a retry).

        Raises:
            RegistrationError: Another registration owns the name, or the call failed.
        """
        metadata = obj["metadata"]
        try:
            return self.create(obj, model_name=model_name)
        except AlreadyExists:
            existing = self.get(metadata["namespace"], metadata["name"], model_name=model_name)
        if existing is None:  # deleted between our create and get: try once more
            try:
                return self.create(obj, model_name=model_name)
            except AlreadyExists:
                existing = self.get(metadata["namespace"], metadata["name"], model_name=model_name)
        if existing is not None and _model_object.same_registration(existing, obj):
            return existing
        owner = _model_object.identity(existing or {})
        raise RegistrationError(
            f"the Michelangelo Model {metadata['namespace']}/{metadata['name']} at "
            f"{self.location} already exists and belongs to another registration "
            f"(MLflow model {owner[0] or '?'!r} version {owner[1] or '?'}, run "
            f"{owner[2] or '?'}); it was left unchanged",
            model_name=model_name,
            fix="pass michelangelo_name= another name for the Michelangelo side, or "
            f"delete the existing Model (kubectl delete models -n {metadata['namespace']} "
            f"{metadata['name']}) if it is stale, then retry",
        )
