"""``@tracked``: run every call of a function in its own tracked run."""

from __future__ import annotations

import copy
import functools
import inspect
import sys
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar, overload

from typing_extensions import Unpack

from michelangelo_mlflow import _params, _provenance
from michelangelo_mlflow._run import RunOptions, TrackingRun, check_arguments
from michelangelo_mlflow.exceptions import ConfigurationError

__all__ = ["TrackedOptions", "tracked"]

P = ParamSpec("P")
R = TypeVar("R")


class TrackedOptions(RunOptions, total=False):
    """The options of ``@tracked``: those of a tracked run, and ``log_params``."""

    log_params: str | Iterable[str] | None


@overload
def tracked(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def tracked(
    experiment: str | None = None,
    run_name: str | None = None,
    **options: Unpack[TrackedOptions],
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def tracked(
    experiment: str | Callable[P, R] | None = None,
    run_name: str | None = None,
    **options: Unpack[TrackedOptions],
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Run every call of the decorated function in its own :func:`tracking_run`.

    Works bare (``@tracked``) and called (``@tracked(experiment=...)``). The wrapper
    keeps the function's name, qualname, module, docstring, ``__wrapped__`` and
    signature, so it composes with ``@uniflow.task()`` in either order. The run is
    named after the function unless ``run_name`` is given, and tagged
    ``michelangelo.task`` with the function's dotted path. Explicit ``settings`` are
    completed from the environment at each call, not at decoration time.

    Args:
        experiment: As for :func:`tracking_run`.
        run_name: As for :func:`tracking_run`; default: the function's name.
        **options: The options of :func:`tracking_run` (``tags``, ``params``,
            ``description``, ``nested``, ``run_id``, ``settings``, ``key``,
            ``autolog``, ``system_metrics``; ``key`` defaults to the function's dotted
            path; ``autolog`` is in force during each call only), and ``log_params``: name or names
            of the function's parameters whose values are logged as params on each
            call. A scalar is logged under its parameter name; a mapping, dataclass or
            pydantic model is flattened into its own (dotted) keys, like
            ``mlflow.log_params(config)``.

    Returns:
        The wrapped function, or a decorator when called with arguments.

    Raises:
        ConfigurationError: At decoration time, when ``log_params`` names a
            parameter the function does not have, the target is a class or a
            generator function, an option has the wrong type, an ``autolog`` flavor's
            library is not installed, or ``system_metrics=True`` lacks ``psutil``.

    Example:
        >>> @tracked(experiment="fraud-detection", log_params="config")  # doctest: +SKIP
        ... def train_model(train_data, config: dict):
        ...     mlflow.log_metric("auc", 0.91)

        With MLflow's scikit-learn autologging in force during each call only:

        >>> @tracked(experiment="fraud-detection", autolog="sklearn")  # doctest: +SKIP
        ... def fit(x, y):
        ...     return LogisticRegression().fit(x, y)  # params, metrics, model: in the run
    """
    if callable(experiment):
        return tracked()(experiment)
    log_params = options.pop("log_params", None)
    names = (log_params,) if isinstance(log_params, str) else tuple(log_params or ())
    check_arguments(experiment, run_name, options)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        task_function = _uniflow_task(fn)
        if task_function is not None:  # @tracked above @uniflow.task: wrap what it runs
            wrapped_task = copy.copy(task_function)
            wrapped_task._fn = decorate(task_function.fn)
            return wrapped_task  # type: ignore[no-any-return]
        original = _check_target(fn)
        signature = inspect.signature(fn)
        _check_log_params(names, signature, original)
        task = _provenance.dotted_path(original)

        def run_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> TrackingRun:
            called = _called_params(signature, names, args, kwargs)
            run_options: RunOptions = {k: v for k, v in options.items() if k != "log_params"}  # type: ignore[assignment]
            run_options["params"] = {**(options.get("params") or {}), **called}
            return TrackingRun(experiment, run_name or original.__name__, task=task, **run_options)

        if inspect.iscoroutinefunction(original):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with run_for(args, kwargs):
                    return await fn(*args, **kwargs)  # type: ignore[misc]

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with run_for(args, kwargs):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def _check_target(fn: Any) -> Callable[..., Any]:
    if inspect.isclass(fn):
        raise ConfigurationError(
            f"@tracked cannot decorate the class {fn.__qualname__}: it would be replaced by a "
            "function",
            variable="fn",
            fix="decorate the method that does the work (such as its fit or run method), "
            "or use `with tracking_run(...)` inside it",
        )
    if not callable(fn):
        raise ConfigurationError(
            f"@tracked decorates functions, not a {type(fn).__name__} ({fn!r:.60})",
            variable="fn",
            fix="put @tracked(...) directly above a def",
        )
    original: Callable[..., Any] = inspect.unwrap(fn)
    if inspect.isgeneratorfunction(original) or inspect.isasyncgenfunction(original):
        raise ConfigurationError(
            f"@tracked cannot wrap the generator function {original.__qualname__}: the "
            "run would end before the generator runs",
            variable="fn",
            fix="use `with tracking_run(...)` inside the generator instead",
        )
    return original


def _check_log_params(
    names: tuple[str, ...], signature: inspect.Signature, original: Callable[..., Any]
) -> None:
    unknown = [n for n in names if n not in signature.parameters]
    if unknown:
        raise ConfigurationError(
            f"log_params names {', '.join(map(repr, unknown))}, which "
            f"{original.__qualname__}{signature} does not have",
            variable="log_params",
            fix=f"use parameter names of {original.__qualname__}: "
            f"{', '.join(signature.parameters)}",
        )


def _called_params(
    signature: inspect.Signature,
    names: tuple[str, ...],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    if not names:
        return {}
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    logged: dict[str, Any] = {}
    for name in names:
        value = bound.arguments[name]
        flat = _params.flatten(value) if _params.is_nested(value) else {name: value}
        clash = sorted(set(flat) & set(logged))
        if clash:
            raise ConfigurationError(
                f"log_params: {', '.join(clash)} would be logged twice",
                variable="log_params",
                fix="log only one of the parameters that share these keys",
            )
        logged.update(flat)
    return logged


def _uniflow_task(fn: Any) -> Any:
    module = sys.modules.get("michelangelo.uniflow.core.decorator")
    task_class = getattr(module, "TaskFunction", None)
    if task_class is not None and isinstance(fn, task_class):
        return fn
    return None
