"""The ``with`` protocol shared by the test services: start on entry, stop on exit."""

from __future__ import annotations

import abc
from types import TracebackType

from typing_extensions import Self

__all__ = ["Service"]


class Service(abc.ABC):
    """A test service used as ``with Service(...) as service:``: started, then stopped."""

    @abc.abstractmethod
    def start(self) -> Self:
        """Start the service and return it."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the service; safe to call more than once."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
