"""Autologging scoped to a tracked run: switched on when the run opens, put back when it ends.

MLflow's autologging is process-wide: ``mlflow.autolog()`` and
``mlflow.<flavor>.autolog()`` patch the training libraries and keep their
configuration in ``mlflow.utils.autologging_utils.AUTOLOGGING_INTEGRATIONS`` (one
dict of ``autolog()`` arguments per integration); ``mlflow.autolog()`` also leaves
post-import hooks that switch autologging on for libraries imported later. This
module owns the run's ``autolog=`` option:

- :func:`resolve_autolog` checks the option before any run exists (a known flavor, its
  library installed, options that its ``autolog()`` takes) and turns it into an
  :class:`AutologPlan`; the names users type for a library (``lightning``,
  ``pytorch_lightning``, ``torch``: see :data:`ALIASES`) are MLflow's flavor for it;
- :attr:`AutologPlan.tags` are the tags ``mlflow.<flavor>.autolog()`` puts on the runs
  it creates (``mlflow.autologging`` and ``extra_tags``), which the tracked run carries;
- :func:`autolog_scope` applies the plan while the run is open (patched calls log into
  the run active in their thread: this one) and, when it ends, puts back exactly the
  configuration it found: integrations it changed are switched off (their patches
  reverted) and those the user had configured before are configured again with the
  user's own arguments; import hooks it left for libraries not imported meanwhile are
  removed.

Scopes are counted across threads, like MLflow's other globals (see ``_scope``): a run
in another thread may share the same autologging configuration, but not open another
one while the first is in force.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import importlib.util
import inspect
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from michelangelo_mlflow._state import STATE, hold, let_go
from michelangelo_mlflow.exceptions import ConfigurationError

__all__ = ["AutologPlan", "autolog_scope", "resolve_autolog"]

log = logging.getLogger("michelangelo_mlflow")

ALL = "mlflow"
"""The integration name of ``mlflow.autolog()`` (every supported library)."""

AUTOLOGGING_TAG = "mlflow.autologging"
"""MLflow's tag naming the integration that autologged a run (``mlflow.utils.mlflow_tags``)."""

ALIASES: Mapping[str, tuple[str, str, str]] = {
    # What users type: (MLflow's flavor, the module it needs, its requirement line).
    # mlflow.pytorch.autolog() patches both lightning.pytorch and pytorch_lightning.
    "lightning": ("pytorch", "lightning", "lightning"),
    "pytorch_lightning": ("pytorch", "pytorch_lightning", "pytorch-lightning"),
    "pytorch-lightning": ("pytorch", "pytorch_lightning", "pytorch-lightning"),
    "torch": ("pytorch", "torch", "torch"),
}
"""Library names accepted for MLflow flavors; ``transformers``, ``keras`` and ``tensorflow``
are MLflow's flavor names already."""

_REFUSED = {
    "disable": "pass autolog=False to switch autologging off for the run",
    "exclusive": "leave exclusive out: exclusive=True keeps autologging out of runs the user "
    "started, which is exactly this run",
}


@dataclass(frozen=True)
class AutologPlan:
    """What to call when the run opens: ``mlflow.autolog`` or some flavors' ``autolog``.

    Attributes:
        calls: ``(integration, arguments)`` pairs, in order; ``mlflow`` is
            ``mlflow.autolog`` itself.
        disable: Whether the plan switches autologging off for the run.
    """

    calls: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
    disable: bool = False

    @property
    def tags(self) -> dict[str, str]:
        """The tags ``autolog()`` gives the runs it creates, for the tracked run.

        ``mlflow.autologging`` names the flavors (comma-separated when there are
        several; left out for ``mlflow.autolog()``, which tags each run with the flavor
        that made it), then each call's ``extra_tags``.

        Example:
            >>> AutologPlan((("pytorch", ()),)).tags
            {'mlflow.autologging': 'pytorch'}
        """
        if self.disable:
            return {}
        flavors = [name for name, _ in self.calls if name != ALL]
        tags = {AUTOLOGGING_TAG: ",".join(flavors)} if flavors else {}
        for _, arguments in self.calls:
            extra = dict(arguments).get("extra_tags") or {}
            tags.update({str(k): str(v) for k, v in dict(extra).items() if k != AUTOLOGGING_TAG})
        return tags

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}({dict(args)})" for name, args in self.calls)
        return f"AutologPlan({shown})"


def resolve_autolog(value: Any) -> AutologPlan | None:
    """Check the ``autolog=`` option and turn it into a plan, before any run exists.

    Args:
        value: ``None`` (leave autologging as it is), ``True`` (``mlflow.autolog()``),
            ``False`` (autologging off for the run), a flavor name or a list of them,
            or a mapping of ``mlflow.autolog`` options, optionally with flavor names
            as keys whose values are ``True`` or that flavor's own options.

    Returns:
        The plan, or ``None`` for ``None``.

    Raises:
        ConfigurationError: An unknown flavor, a flavor whose library is not
            installed, or an option its ``autolog()`` does not take.

    Example:
        >>> resolve_autolog(["sklearn", "lightgbm"])  # doctest: +SKIP
        AutologPlan(sklearn({}), lightgbm({}))
    """
    if value is None:
        return None
    if value is True:
        return AutologPlan(((ALL, ()),))
    if value is False:
        return AutologPlan(((ALL, (("disable", True), ("silent", True))),), disable=True)
    if isinstance(value, str):
        return _flavors_plan({value: {}}, {})
    if isinstance(value, Mapping):
        return _mapping_plan(value)
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        if not value:
            raise _error(value, "names no flavor", "name at least one, or pass True for all")
        if len(set(value)) != len(value):
            raise _error(value, "names a flavor twice", "name each flavor once")
        return _flavors_plan({name: {} for name in value}, {})
    raise _error(
        value,
        f"is a {type(value).__name__}",
        'pass True, a flavor name ("sklearn"), a list of flavor names, or a mapping of '
        'autolog options such as {"log_models": False}',
    )


def _mapping_plan(value: Mapping[Any, Any]) -> AutologPlan:
    known = _known_flavors()
    flavors: dict[str, Mapping[str, Any]] = {}
    common: dict[str, Any] = {}
    for key, options in value.items():
        if not isinstance(key, str):
            raise _error(value, f"has the key {key!r}, not a string", "use option or flavor names")
        if key in known or key in ALIASES:
            if options is True or options is None:
                options = {}
            if not isinstance(options, Mapping):
                raise _error(
                    value,
                    f"maps the flavor {key!r} to {options!r}",
                    f"map it to True or to a dict of mlflow.{key}.autolog options, such as "
                    f'{{"{key}": {{"log_models": False}}}}',
                )
            flavors[key] = options
        else:
            _check_not_a_misspelled_flavor(key, known)
            common[key] = options
    if not flavors:
        _check_options(ALL, _autolog_function(ALL), common)
        return AutologPlan(((ALL, tuple(sorted(common.items()))),))
    return _flavors_plan(flavors, common)


def _check_not_a_misspelled_flavor(key: str, known: list[str]) -> None:
    options = inspect.signature(_autolog_function(ALL)).parameters
    close = difflib.get_close_matches(key, [*known, *ALIASES], n=1)
    if key not in options and close:
        raise _error(
            key,
            "is neither an autolog option nor a flavor MLflow can autolog",
            f"did you mean the flavor {close[0]!r}?",
        )


def _flavors_plan(
    flavors: Mapping[str, Mapping[str, Any]], common: Mapping[str, Any]
) -> AutologPlan:
    named: dict[str, str] = {}  # MLflow's flavor -> the name the user gave it
    for name in flavors:
        flavor = ALIASES[name][0] if name in ALIASES else name
        if flavor in named:
            raise _error(
                list(flavors),
                f"names {named[flavor]!r} and {name!r}, which are both MLflow's flavor {flavor!r}",
                f"name it once (mlflow.{flavor}.autolog() covers both)",
            )
        named[flavor] = name
    calls = []
    for flavor, name in named.items():
        options = flavors[name]
        function = _flavor_function(name)
        arguments = {**common, **options}
        _check_options(flavor, function, arguments)
        calls.append((flavor, tuple(sorted(arguments.items()))))
    return AutologPlan(tuple(calls))


def _known_flavors() -> list[str]:
    from mlflow.ml_package_versions import FLAVOR_TO_MODULE_NAME

    try:
        from mlflow.utils.autologging_utils import is_autolog_supported
    except ImportError:  # pragma: no cover - older MLflow: every flavor with a module
        return sorted(n for n in FLAVOR_TO_MODULE_NAME if "-" not in n)
    return sorted(n for n in FLAVOR_TO_MODULE_NAME if "-" not in n and is_autolog_supported(n))


def _flavor_function(name: str) -> Callable[..., Any]:
    """The ``autolog`` of a flavor, or of the flavor an alias names, once its library is there."""
    from mlflow.ml_package_versions import FLAVOR_TO_MODULE_NAME

    known = _known_flavors()
    if name not in known and name not in ALIASES:
        close = difflib.get_close_matches(name, [*known, *ALIASES], n=3)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise _error(
            name,
            "is not a flavor MLflow can autolog",
            f"{hint}use one of: {', '.join(sorted([*known, *ALIASES]))}",
        )
    flavor, library, requirement = ALIASES.get(name) or (name, FLAVOR_TO_MODULE_NAME[name], "")
    if not _installed(library):
        requirement = requirement or _requirement(name)
        raise ConfigurationError(
            f"autolog={name!r}: the flavor {name!r} needs the {library!r} package, which is not "
            "installed",
            variable="autolog",
            fix=f"add `{requirement}` to the requirements (or run: pip install '{requirement}'), "
            "or leave the flavor out",
        )
    return _autolog_function(flavor)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package (google.genai)
        return False


def _requirement(flavor: str) -> str:
    try:
        from mlflow.utils.autologging_utils.versioning import (
            get_min_max_version_and_pip_release,
        )

        minimum, _, release = get_min_max_version_and_pip_release(flavor)
    except Exception:  # pragma: no cover - an MLflow without the table: the bare name
        from mlflow.ml_package_versions import FLAVOR_TO_MODULE_NAME

        return str(FLAVOR_TO_MODULE_NAME[flavor]).split(".")[0]
    return f"{release}>={minimum}"


def _autolog_function(name: str) -> Callable[..., Any]:
    module = importlib.import_module("mlflow" if name == ALL else f"mlflow.{name}")
    function: Callable[..., Any] = module.autolog
    return function


def _check_options(name: str, function: Callable[..., Any], options: Mapping[str, Any]) -> None:
    accepted = [p for p in inspect.signature(function).parameters if p not in _REFUSED]
    where = "mlflow.autolog" if name == ALL else f"mlflow.{name}.autolog"
    for option, value in options.items():
        if option in _REFUSED and not (option == "exclusive" and value is False):
            raise _error({option: value}, f"sets {option!r}", _REFUSED[option])
        if option not in accepted and option not in _REFUSED:
            close = difflib.get_close_matches(option, accepted, n=2)
            hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
            raise _error(
                {option: value},
                f"has the option {option!r}, which {where}() does not take",
                f"{hint}{where}() takes: {', '.join(accepted)}",
            )


def _error(value: Any, what: str, fix: str) -> ConfigurationError:
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return ConfigurationError(f"autolog={text} {what}", variable="autolog", fix=fix)


# --- applying and restoring ------------------------------------------------------------


@dataclass
class _Saved:
    """Autologging as a scope found it: every integration's config, pending import hooks."""

    configs: dict[str, dict[str, Any]]
    hooks: dict[str, list[Any]]


@contextmanager
def autolog_scope(plan: AutologPlan | None, *, run: str = "this run") -> Iterator[None]:
    """Apply ``plan`` for the block and put MLflow's autologging back as it was after.

    Args:
        plan: From :func:`resolve_autolog`; ``None`` leaves autologging alone.
        run: How to name the run in an error message.

    Yields:
        Nothing.

    Raises:
        ConfigurationError: A run in another thread has another autologging
            configuration in force.

    Example:
        >>> with autolog_scope(resolve_autolog("sklearn")):  # doctest: +SKIP
        ...     model.fit(x, y)  # logged into the active run
    """
    if plan is None:
        yield
        return
    holder, _ = hold(STATE.autolog_stack, plan, _save, lambda: _apply(plan), _restore)
    if holder is None:
        with STATE.lock:
            other = STATE.autolog_stack[-1].key if STATE.autolog_stack else None
        raise ConfigurationError(
            f"{run} asks for autologging {plan!r}, but a tracked run in another thread has "
            f"{other!r} in force, and MLflow's autologging is process-wide",
            variable="autolog",
            fix="give both runs the same autolog= option, or run them in separate processes",
        )
    try:
        yield
    finally:
        let_go(STATE.autolog_stack, holder, _restore)


def _save() -> _Saved:
    from mlflow.utils import autologging_utils, import_hooks

    with import_hooks._post_import_hooks_lock:
        hooks = {name: list(value) for name, value in import_hooks._post_import_hooks.items()}
    return _Saved(copy.deepcopy(autologging_utils.AUTOLOGGING_INTEGRATIONS), hooks)


def _apply(plan: AutologPlan) -> None:
    from mlflow.utils.autologging_utils import AUTOLOGGING_INTEGRATIONS

    for name, arguments in plan.calls:
        _autolog_function(name)(**dict(arguments))
    if plan.calls[0][0] != ALL:
        return
    # mlflow.autolog() leaves alone the flavors a user configured with their own
    # mlflow.<flavor>.autolog(...): switch those off too for autolog=False, and make one
    # configured with exclusive=True (which would log nothing into this run) log into it.
    for name, config in list(AUTOLOGGING_INTEGRATIONS.items()):
        if name == ALL or config.get("disable", True):
            continue
        function = _autolog_function(name)
        if plan.disable:
            function(disable=True, silent=True)
        elif config.get("exclusive"):
            accepted = inspect.signature(function).parameters
            kept = {k: v for k, v in config.items() if k in accepted and k != "exclusive"}
            function(**kept, exclusive=False)


def _restore(saved: _Saved) -> None:
    """Put autologging back as ``saved``: MLflow has no call that undoes ``autolog()``."""
    from mlflow.utils import autologging_utils

    current = autologging_utils.AUTOLOGGING_INTEGRATIONS
    changed = [n for n in list(current) if current.get(n) != saved.configs.get(n)]
    for name in changed:
        if name != ALL:
            _call(name, {"disable": True, "silent": True})  # reverts its patches
    _restore_hooks(saved.hooks)
    for name in changed:
        current[name] = copy.deepcopy(saved.configs.get(name, {}))
    if changed:
        _reenable(saved.configs, changed)
    for name in changed:  # exactly as found, MLflow's "globally configured" marker included
        current[name] = copy.deepcopy(saved.configs.get(name, {}))


def _reenable(configs: dict[str, dict[str, Any]], changed: list[str]) -> None:
    from mlflow.utils.autologging_utils import AUTOLOGGING_CONF_KEY_IS_GLOBALLY_CONFIGURED

    def enabled(name: str) -> bool:
        return bool(configs.get(name)) and not configs[name].get("disable", True)

    if enabled(ALL):
        _call(ALL, configs[ALL])  # the user's mlflow.autolog(...): hooks and global flavors
    for name in changed:
        config = configs.get(name, {})
        if (
            name != ALL
            and enabled(name)
            and not config.get(AUTOLOGGING_CONF_KEY_IS_GLOBALLY_CONFIGURED)
        ):
            _call(name, config)  # the user's own mlflow.<flavor>.autolog(...)


def _call(name: str, config: Mapping[str, Any]) -> None:
    """Call an integration's ``autolog()`` with the arguments it takes; never raise."""
    try:
        function = _autolog_function(name)
        accepted = inspect.signature(function).parameters
        function(**{k: v for k, v in config.items() if k in accepted})
    except Exception as exc:  # restoring must not fail the run's end
        log.warning("could not restore MLflow autologging for %s: %s", name, exc)


def _restore_hooks(saved: dict[str, list[Any]]) -> None:
    import sys

    from mlflow.utils import import_hooks

    with import_hooks._post_import_hooks_lock:
        hooks: dict[str, list[Any]] = import_hooks._post_import_hooks
        for name in list(hooks):
            if name in sys.modules:
                continue  # fired while the run was open: nothing pending to undo
            if name in saved:
                hooks[name] = list(saved[name])
            else:
                del hooks[name]
