"""The IPython magics of ``%load_ext michelangelo_mlflow``: ``%%tracked`` and ``%mm_run``.

``%%tracked experiment=fraud run_name="eda v2" autolog=sklearn`` runs its cell in a
:func:`~michelangelo_mlflow.tracking_run` with those arguments: the run ends with the
cell, FINISHED, or FAILED (with the error recorded) when the cell raises, and the
error is shown as usual. ``%mm_run`` shows the run open through ``mm.start_run``
(id, experiment, link in the MLflow UI, status) and returns its handle.

Only this module imports IPython; it is imported when the extension is loaded.
"""

from __future__ import annotations

import ast
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from michelangelo_mlflow._notebook import NotebookRun, last
from michelangelo_mlflow._run import tracking_run
from michelangelo_mlflow.exceptions import ConfigurationError

__all__ = ["TrackingMagics", "parse_arguments"]


@magics_class
class TrackingMagics(Magics):
    """``%%tracked`` (a cell in a tracked run) and ``%mm_run`` (the open run).

    Example:
        >>> get_ipython().register_magics(TrackingMagics)  # doctest: +SKIP
    """

    @cell_magic
    def tracked(self, line: str, cell: str) -> Any:
        """Run the cell in a tracked run: ``%%tracked experiment=... run_name=... [option=...]``.

        Options are those of ``tracking_run``, as ``name=value`` pairs separated by
        spaces; values are Python literals (``nested=True``, ``tags={"team": "risk"}``,
        ``autolog=["sklearn", "lightgbm"]``) or bare words (``experiment=fraud``).
        The value of the cell's last expression is shown as usual.

        Example:
            >>> %%tracked experiment=fraud run_name=eda autolog=sklearn  # doctest: +SKIP
            ... model.fit(x, y)
        """
        arguments = parse_arguments(line)
        experiment = arguments.pop("experiment", None)
        run_name = arguments.pop("run_name", None)
        with tracking_run(experiment, run_name, **arguments):
            return self._execute(cell)

    def _execute(self, cell: str) -> Any:
        shell = self.shell
        assert shell is not None
        source = str(shell.transform_cell(cell))  # type: ignore[no-untyped-call]
        filename = shell.compile.cache(source, raw_code=cell)  # tracebacks show the lines
        tree = ast.parse(source, filename)
        last_expression = None
        if tree.body and isinstance(final := tree.body[-1], ast.Expr):
            tree.body.pop()
            last_expression = ast.Expression(final.value)
        namespace = shell.user_ns
        exec(compile(tree, filename, "exec"), namespace)
        if last_expression is None:
            return None
        return eval(compile(last_expression, filename, "eval"), namespace)

    @line_magic
    def mm_run(self, line: str) -> NotebookRun | None:
        """Show the run open through ``mm.start_run``: id, experiment, UI link, status.

        Example:
            >>> %mm_run  # doctest: +SKIP
            NotebookRun(run_id='5f0c…', run_name='eda', experiment='fraud', status='RUNNING', …)
        """
        if line.strip():
            raise ConfigurationError(
                f"%mm_run takes no arguments, got {line.strip()!r}",
                variable="mm_run",
                fix="run %mm_run alone",
            )
        run = NotebookRun.current()
        if run is not None:
            return run
        ended = last()
        print(
            "No MLflow run is open through mm.start_run in this kernel; start one with "
            "run = mm.start_run(experiment=...)."
            + (f" The last one, {ended.run_id}, ended {ended.status}." if ended else "")
        )
        return None


def parse_arguments(line: str) -> dict[str, Any]:
    """Parse ``name=value`` pairs separated by spaces; values are literals or bare words.

    Args:
        line: The magic's line, after IPython's ``{variable}`` expansion.

    Returns:
        Argument names to values.

    Raises:
        ConfigurationError: A word that is not ``name=value``, or a name given twice.

    Example:
        >>> parse_arguments('experiment=fraud run_name="eda v2" nested=True')
        {'experiment': 'fraud', 'run_name': 'eda v2', 'nested': True}
    """
    arguments: dict[str, Any] = {}
    for word in _words(line):
        name, equals, text = word.partition("=")
        if not equals or not name.isidentifier():
            raise ConfigurationError(
                f"%%tracked: {word!r} is not name=value",
                variable="%%tracked",
                fix="write the arguments as name=value pairs separated by spaces, such as "
                '%%tracked experiment=fraud run_name="eda v2" autolog=sklearn',
            )
        if name in arguments:
            raise ConfigurationError(
                f"%%tracked: {name!r} is given twice", variable=name, fix="give it once"
            )
        try:
            arguments[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            arguments[name] = text  # a bare word: a string
    return arguments


def _words(line: str) -> list[str]:
    """Split at spaces outside quotes and brackets: ``tags={"a": 1}`` stays one word."""
    words, current, depth, quote = [], "", 0, ""
    for char in line.strip():
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char.isspace() and depth == 0:
            if current:
                words.append(current)
            current = ""
            continue
        current += char
    if current:
        words.append(current)
    return words
