"""How long `michelangelo-mlflow --help` takes, against the interpreter's own start.

The CLI imports only click and the standard library up front; MLflow, pydantic and
requests are imported by the command that needs them. Each command line runs in a
fresh process, interleaved, and the table shows medians and the ratio to a bare
`python -c pass` measured in the same run.

    python benchmarks/cli_startup.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

CLI = str(Path(sys.executable).with_name("michelangelo-mlflow"))

COMMANDS = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "python -c 'import click'": [sys.executable, "-c", "import click"],
    "michelangelo-mlflow --help": [CLI, "--help"],
    "michelangelo-mlflow sync --help": [CLI, "sync", "--help"],
    "python -c 'import michelangelo_mlflow'": [sys.executable, "-c", "import michelangelo_mlflow"],
    "python -c 'import mlflow' (for scale)": [sys.executable, "-c", "import mlflow"],
}


def once(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    for command in COMMANDS.values():  # warm the page cache
        once(command)
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeat):
        for name, command in COMMANDS.items():
            samples[name].append(once(command))
    baseline = statistics.median(samples["python -c pass (baseline)"])
    print(f"CLI start-up, median of {args.repeat} runs each (goal: --help <= 0.5 s)\n")
    print("| Command | median (s) | ratio to `python -c pass` |")
    print("|---|---:|---:|")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.3f} | {median / baseline:.1f}x |")


if __name__ == "__main__":
    main()
