"""A server outage in the middle of Lightning and Transformers training: the SDK vs plain MLflow.

Two frameworks train a small model on the CPU with data made in memory, logging every
step to MLflow, against a real local MLflow server (sqlite, 1 worker, 127.0.0.1):

- PyTorch Lightning: a 3-layer MLP (``LightningModule``), ``--lightning-epochs``
  epochs of ``--lightning-steps`` steps, ``train_loss`` every step
  (``log_every_n_steps=1``) and ``val_loss`` every epoch, to
  ``pytorch_lightning.loggers.MLFlowLogger(run_id=<the run>)``;
- Hugging Face Transformers: a small GPT-2 built from a config (no download),
  ``--transformers-steps`` steps with ``Trainer(report_to="mlflow", logging_steps=1)``.

The defaults give each about 25 s of training in the SDK's baseline on an idle 2-core
machine, so that an outage starting a third into training ends well before it does
(with shorter training the block's end waits for the server, which the ratio counts).

Each framework runs in these variants, each in a fresh Python process (imports not
timed), one experiment each:

1. the baseline: inside ``mm.tracking_run``, the server healthy the whole time;
2. the SDK with an outage: the same, with the server killed (SIGKILL, by pid) when
   training reaches a third of its steps, and restarted on the same port and store
   so that it answers again about ``--outage`` seconds (default 10) after the kill:
   the time a restart takes is measured first, and the restart is launched that much
   earlier, in a thread, while training goes on;
3. plain MLflow (``mlflow.start_run()``, MLflow's default retries and timeouts), once
   without and once with the same outage, for contrast. Every variant is capped at
   ``--cap`` seconds (default 240): a capped variant is reported as such.

(1) and (2) are measured ``--repeat`` times (default 2), interleaved, and their
medians are reported; (3) once each. Training uses ``--torch-threads`` (default 1)
threads: the local server, which in production runs on another machine, gets the
other core, so that its restart (several CPU seconds, measured and reported from
``/proc``) takes as little as possible from training.

Reported per variant: the wall time of ``fit``/``train``; the wall time from entering
the block (``mm.tracking_run`` or ``mlflow.start_run``, experiment lookup included)
to leaving it (the run closed: for the SDK, every point delivered); the time from the
end of ``fit`` to the block's end; the longest training step (from the end of one
step to the end of the next); the points on the server against the points the
framework logged (what Lightning handed its loggers, recorded by an in-memory logger
beside ``MLFlowLogger``; ``trainer.state.log_history`` for Transformers; counted with
``MlflowClient.get_metric_history``, a point found when a row has its step and value);
duplicate rows; the run's final status; runs in the experiment. A second table says
where the time went: block entry to ``fit``, ``fit``, ``fit``'s end to the block's end,
and the median step before the kill, while the server was down and after it answered.
A last table sets the SDK's points and its outage/baseline wall-time ratio beside the
targets of issue 15 (the same counts; at most 1.1x).

Transformers' ``MLflowCallback`` logs with ``synchronous=False`` (MLflow's async
logging) when MLflow is 2.8 or later: plain MLflow's stall then shows at the block's
end (``end_run`` waits for MLflow's queue), not in ``train``.

    python benchmarks/frameworks_outage.py [--repeat 2] [--outage 10] [--cap 240]
        [--lightning-epochs 10] [--lightning-steps 640] [--transformers-steps 1200]
        [--torch-threads 1] [--frameworks lightning transformers] [--quick]

It needs the frameworks (``nox -s frameworks --install-only``, then
``.nox/frameworks/bin/python benchmarks/frameworks_outage.py``); without them it says
so and exits 0. ``--quick`` (short training, one repeat, the restart launched at the
kill, so that the outage outlasts training, no plain baseline, a 60 s cap) is a smoke
run of the whole script, under two minutes; its ratios mean nothing. Timings are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FRAMEWORKS = ("lightning", "transformers")
REQUIRES = {"lightning": ("torch", "pytorch_lightning"), "transformers": ("torch", "transformers")}
Points = dict[str, list[tuple[int, float]]]  # key -> (step, value), as the framework logged


def say(tag: str, **payload: Any) -> None:
    print(tag, json.dumps(payload), flush=True)


# --- the task (child process) --------------------------------------------------------------
class Probe:
    """What the task reports: step times, the kill signal, the framework's own points."""

    def __init__(self, total_steps: int) -> None:
        self.kill_step = max(1, total_steps // 3)
        self.last = time.perf_counter()
        self.longest = 0.0
        self.steps = 0
        self.ends: list[float] = []  # wall clock at each step's end
        self.took: list[float] = []  # each step, from the previous one's end
        self.collect: Callable[[], Points] = dict

    def step_ended(self, step: int) -> None:
        now = time.perf_counter()
        took, self.last = now - self.last, now
        self.longest = max(self.longest, took)
        self.took.append(took)
        self.ends.append(time.time())
        self.steps = step
        if step == self.kill_step:
            say("kill", at=time.time(), step=step)  # the parent kills the server now


def lightning_task(probe: Probe, args: argparse.Namespace, run_id: str, url: str) -> None:
    import pytorch_lightning as L
    import torch
    from pytorch_lightning.callbacks import Callback
    from pytorch_lightning.loggers import MLFlowLogger
    from pytorch_lightning.loggers.logger import Logger
    from torch.utils.data import DataLoader, TensorDataset

    class Net(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            width = args.lightning_width
            self.net = torch.nn.Sequential(
                torch.nn.Linear(32, width), torch.nn.ReLU(),
                torch.nn.Linear(width, width), torch.nn.ReLU(),
                torch.nn.Linear(width, 1),
            )  # fmt: skip

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, _: int) -> None:
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Recorder(Logger):
        """What Lightning hands its loggers, kept in memory."""

        def __init__(self) -> None:
            super().__init__()
            self.points: Points = defaultdict(list)

        name = "recorder"  # type: ignore[assignment]
        version = 0  # type: ignore[assignment]

        def log_hyperparams(self, *_: Any, **__: Any) -> None:
            pass

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            for key, v in metrics.items():
                self.points[key].append((int(step or 0), float(v)))

    class Steps(Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
            probe.step_ended(trainer.global_step)

    def data(batches: int, seed: int) -> DataLoader[Any]:
        x = torch.randn(batches * 64, 32, generator=torch.Generator().manual_seed(seed))
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=64)

    torch.manual_seed(0)
    recorder = Recorder()
    probe.collect = lambda: recorder.points
    trainer = L.Trainer(
        max_epochs=args.lightning_epochs,
        logger=[MLFlowLogger(tracking_uri=url, run_id=run_id), recorder],
        callbacks=[Steps()],
        log_every_n_steps=1,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    train, val = data(args.lightning_steps, 0), data(4, 1)
    fit_timed(probe, lambda: trainer.fit(Net(), train, val))


def transformers_task(probe: Probe, args: argparse.Namespace, workdir: Path) -> None:
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    class Steps(TrainerCallback):
        def on_step_end(self, _: Any, state: Any, *__: Any, **___: Any) -> None:
            probe.step_ended(state.global_step)

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=256, n_positions=64, n_embd=64, n_layer=2, n_head=2)
    ids = torch.randint(0, 256, (64, 64), generator=torch.Generator().manual_seed(0))
    arguments = TrainingArguments(
        output_dir=str(workdir / "out"),
        max_steps=args.transformers_steps,
        logging_steps=1,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        report_to="mlflow",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=GPT2LMHeadModel(config),
        args=arguments,
        train_dataset=[{"input_ids": row, "labels": row} for row in ids],  # type: ignore[arg-type]
        callbacks=[Steps()],
    )

    def collect() -> Points:
        points: Points = defaultdict(list)
        for entry in trainer.state.log_history:
            for key, v in entry.items():  # what MLflowCallback.on_log sends
                if key != "step" and isinstance(v, (int, float)):
                    clean = re.sub(r"[^0-9A-Za-z_\-\.\ :/]", "_", key)
                    points[clean].append((int(entry["step"]), float(v)))
        return points

    probe.collect = collect
    fit_timed(probe, trainer.train)


def fit_timed(probe: Probe, fit: Callable[[], object]) -> None:
    say("fit", start=time.time())
    probe.last = time.perf_counter()
    fit()
    say("fit", end=time.time())


def preload(framework: str, threads: int) -> None:
    """Import the framework before the clock starts (imports are not timed)."""
    import torch

    torch.set_num_threads(threads)
    if framework == "lightning":
        import pytorch_lightning.loggers  # noqa: F401
    else:
        import transformers.integrations.integration_utils  # noqa: F401
        from transformers import GPT2LMHeadModel, Trainer  # noqa: F401


def task(framework: str, mode: str, url: str, experiment: str, args: argparse.Namespace) -> None:

    preload(framework, args.torch_threads)
    total = (
        args.lightning_epochs * args.lightning_steps
        if framework == "lightning"
        else args.transformers_steps
    )
    probe = Probe(total)
    state: dict[str, Any] = {"run_id": None}
    begin = time.time()

    def report(**extra: Any) -> None:
        say("result", begin=begin, steps=probe.steps, longest=probe.longest, **state, **extra)
        say("points", points=probe.collect())
        say("steps", ends=probe.ends[: len(probe.took)], took=probe.took[: len(probe.ends)])

    def capped() -> None:
        report(capped=True)
        os._exit(3)

    watchdog = threading.Timer(args.cap, capped)
    watchdog.daemon = True
    watchdog.start()

    def train(run_id: str) -> None:
        state["run_id"] = run_id
        if framework == "lightning":
            lightning_task(probe, args, run_id, url)
        else:
            transformers_task(probe, args, Path.cwd())

    from _servers import run_body

    error, caught = run_body(mode, url, experiment, "train", train)
    closed = time.time()
    watchdog.cancel()
    ours = [f"{w.category.__name__}: {w.message}" for w in caught if "michelangelo" in w.filename]
    report(capped=False, closed=closed, error=error, warnings=list(dict.fromkeys(ours)))


# --- one variant (parent) ------------------------------------------------------------------
@dataclass
class Outcome:
    framework: str
    mode: str  # "sdk" or "plain"
    outage: bool
    result: dict[str, Any]
    exited: float
    fit: dict[str, float] = field(default_factory=dict)
    killed: float | None = None  # seconds after the block was entered
    killed_step: int | None = None
    answered: float | None = None  # seconds after the kill
    restart_cpu: float | None = None  # CPU seconds the server took to start again
    steps: list[tuple[float, float]] = field(default_factory=list)  # (end, seconds) each
    logged: int = 0
    found: int = 0
    repeated: int = 0  # points logged again with the same step and value (counted once)
    rows: int = 0
    status: str = "?"
    runs: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def wall(self) -> float:
        end = self.result.get("closed") or self.exited
        return float(end - self.result["begin"])

    @property
    def fit_wall(self) -> float | None:
        if "start" in self.fit and "end" in self.fit:
            return self.fit["end"] - self.fit["start"]
        return None

    @property
    def setup(self) -> float | None:
        """Block entry to the start of fit (run opened, logger and trainer built)."""
        return self.fit["start"] - self.result["begin"] if "start" in self.fit else None

    def phases(self) -> list[list[float]]:
        """Step times before the kill, while the server was down, after it answered."""
        split: list[list[float]] = [[], [], []]
        if self.killed is None or self.answered is None:
            split[0] = [took for _, took in self.steps]
            return split
        kill = self.result["begin"] + self.killed
        for end, took in self.steps:
            split[0 if end < kill else 1 if end < kill + self.answered else 2].append(took)
        return split

    @property
    def after_fit(self) -> float | None:
        closed = self.result.get("closed")
        return closed - self.fit["end"] if closed and "end" in self.fit else None


def group_cpu(leader: int) -> float:
    """CPU seconds (user and system) of the processes in ``leader``'s process group so far."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # state ppid pgrp session ... utime stime
        if len(fields) > 12 and int(fields[2]) == leader:
            ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class Killer:
    """Kills the server when the task says so and restarts it in a thread."""

    def __init__(self, server: Any, outage: float, estimate: float) -> None:
        self.server, self.outage, self.estimate = server, outage, estimate
        self.killed: float | None = None
        self.step: int | None = None
        self.answered: float | None = None
        self.restart_cpu: float | None = None  # CPU seconds of the server's processes
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def kill(self, step: int) -> None:
        self.killed, self.step = time.time(), step  # SIGKILL is sent now
        self.server.kill()
        self.thread = threading.Thread(target=self._restart)
        self.thread.start()

    def _restart(self) -> None:
        assert self.killed is not None
        time.sleep(max(0.0, self.killed + self.outage - self.estimate - time.time()))
        try:
            self.server.restart()
        except BaseException as exc:  # reported by the caller
            self.error = exc
        self.answered = time.time() - self.killed
        if self.error is None:
            self.restart_cpu = group_cpu(self.server.pid)

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise RuntimeError(f"the server did not come back: {self.error}") from self.error


def run_child(
    command: list[str], workdir: Path, killer: Killer | None, limit: float
) -> tuple[dict[str, Any], int, float]:
    """Run the task; kill the server when it says so. Its lines by tag, exit code, end time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MICHELANGELO_"))}
    env["HF_HUB_OFFLINE"] = "1"
    log = (workdir / "task.log").open("wb")
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=workdir
    )
    assert child.stdout is not None
    lines: dict[str, Any] = {"fit": {}}
    for line in child.stdout:
        tag, _, payload = line.partition(" ")
        if tag not in ("kill", "fit", "result", "points", "steps"):
            continue  # MLflow's own prints ("View run ...")
        data = json.loads(payload)
        if tag == "kill" and killer is not None:
            killer.kill(data["step"])
        if tag == "fit":
            lines["fit"].update(data)
        else:
            lines[tag] = data
    try:
        child.wait(limit)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    log.close()
    return lines, child.returncode, time.time()


def count(outcome: Outcome, points: Points, url: str, experiment: str) -> None:
    """Points on the server (a row with the logged step and value) against those logged.

    A point logged twice with the same step and value counts once: the server may keep
    one row of the two (the sqlite store drops a row identical in key, step, value and
    timestamp; Transformers logs ``epoch`` at the last step twice, in the last step's
    log and in the summary).
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    run_id = outcome.result.get("run_id")
    if run_id:
        for key, given in points.items():
            logged = list(dict.fromkeys((int(step), float(v)) for step, v in given))
            outcome.repeated += len(given) - len(logged)
            history = client.get_metric_history(run_id, key)
            outcome.rows += len(history)
            stored: dict[int, list[float]] = defaultdict(list)
            for m in history:
                stored[m.step].append(m.value)
            for step, value in logged:
                match = [v for v in stored[step] if math.isclose(v, value, rel_tol=1e-6)]
                if match:
                    stored[step].remove(match[0])
                    outcome.found += 1
            outcome.logged += len(logged)
        outcome.status = client.get_run(run_id).info.status
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        outcome.runs = len(client.search_runs([found.experiment_id]))


def variant(
    framework: str, mode: str, outage: bool, server: Any, args: argparse.Namespace, root: Path
) -> Outcome:
    name = f"bench-fw-{framework}-{mode}-{'outage' if outage else 'none'}-{uuid.uuid4().hex[:6]}"
    workdir = root / name
    workdir.mkdir()
    command = [sys.executable, __file__, *forwarded(args), "--task", framework, mode]
    command += [server.url, name]
    killer = Killer(server, args.outage, args.restart_estimate) if outage else None
    try:
        lines, code, exited = run_child(command, workdir, killer, args.cap + 300)
    finally:
        if killer is not None:
            killer.join()
    result = lines.get("result")
    if result is None:
        tail = (workdir / "task.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the {framework} {mode} task gave no result (exit {code}):\n{tail}")
    outcome = Outcome(framework, mode, outage, result, exited, lines["fit"])
    timing = lines.get("steps", {})
    outcome.steps = list(zip(timing.get("ends", []), timing.get("took", []), strict=False))
    if killer is not None and killer.killed is not None:
        outcome.killed = killer.killed - result["begin"]
        outcome.killed_step, outcome.answered = killer.step, killer.answered
        outcome.restart_cpu = killer.restart_cpu
    elif outage:
        outcome.notes.append("the server was never killed (training ended first?)")
    count(outcome, lines.get("points", {}).get("points", {}), server.url, name)
    if code not in (0, 3) or result.get("error"):
        tail = (workdir / "task.log").read_text(errors="replace").strip().splitlines()[-5:]
        outcome.notes.append(f"the task's process exited with {code}; its log ends:")
        outcome.notes += [f"    {line}" for line in tail]
    return outcome


def forwarded(args: argparse.Namespace) -> list[str]:
    """The options the task needs, as given to this script (after --quick)."""
    return [
        "--cap", str(args.cap),
        "--lightning-epochs", str(args.lightning_epochs),
        "--lightning-steps", str(args.lightning_steps),
        "--lightning-width", str(args.lightning_width),
        "--transformers-steps", str(args.transformers_steps),
        "--torch-threads", str(args.torch_threads),
    ]  # fmt: skip


# --- the report ----------------------------------------------------------------------------
LABEL = {
    ("sdk", False): "`mm.tracking_run`, no outage (baseline)",
    ("sdk", True): "`mm.tracking_run`, outage",
    ("plain", False): "plain MLflow, no outage",
    ("plain", True): "plain MLflow, outage",
}


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def group(outcomes: list[Outcome]) -> dict[tuple[str, str, bool], list[Outcome]]:
    groups: dict[tuple[str, str, bool], list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[(o.framework, o.mode, o.outage)].append(o)
    return groups


def row(
    framework: str, mode: str, outage: bool, runs: list[Outcome], base: float | None, cap: float
) -> str:
    wall = median([o.wall for o in runs])
    assert wall is not None
    capped = any(o.result.get("capped") for o in runs)
    down = "none"
    killed = [o for o in runs if o.killed is not None and o.answered is not None]
    if killed:
        k, a = median([o.killed for o in killed]), median([o.answered for o in killed])
        steps = "/".join(str(o.killed_step) for o in killed)
        cpu = median([o.restart_cpu for o in killed])
        down = f"step {steps}, +{seconds(k)} s, {seconds(a)} s (restart: {seconds(cpu)} CPU s)"
    each = " ".join(f"{o.wall:.1f}" for o in runs) if len(runs) > 1 else ""
    walls = f"{wall:.1f}" + (f" ({each})" if each else "")
    walls += f" **did not finish within the {cap:g} s cap**" if capped else ""
    kept = ", ".join(f"{o.found}/{o.logged}" for o in runs)
    dupes = ", ".join(str(max(0, o.rows - o.found)) for o in runs)
    statuses = ", ".join(sorted({o.status for o in runs}))
    longest = median([o.result.get("longest") for o in runs])
    fit = median([o.fit_wall for o in runs])
    ratio = f"{wall / base:.2f}x" if base else "-"
    return (
        f"| {framework} | {LABEL[(mode, outage)]} | {down} | {seconds(fit)} "
        f"| {walls} | {ratio} "
        f"| {1000 * (longest or 0):,.0f} | {kept} | {dupes} | {statuses} "
        f"| {', '.join(str(o.runs) for o in runs)} |"
    )


def print_report(outcomes: list[Outcome], args: argparse.Namespace, info: dict[str, Any]) -> None:
    print(
        f"MLflow {info['mlflow']}, torch {info['torch']}, pytorch_lightning {info['lightning']}, "
        f"transformers {info['transformers']}, michelangelo-mlflow {info['sdk']}; "
        f"{os.cpu_count()} CPUs, load average {info['load_before']:.2f} before, "
        f"{info['load_after']:.2f} after; 1-worker sqlite server on loopback; "
        f"wall time {info['wall']:.0f} s"
    )
    print(
        f"Server start {info['start']:.1f} s; "
        + (
            "--quick: the restart launched at the kill (the outage lasts one server start). "
            if args.quick
            else f"a kill and restart {args.restart_estimate:.1f} s; outage target "
            f"{args.outage:g} s (restart launched "
            f"{max(0.0, args.outage - args.restart_estimate):.1f} s after the kill). "
        )
        + "Lightning: "
        f"{args.lightning_epochs} epochs x {args.lightning_steps} steps (MLP width "
        f"{args.lightning_width}, batch 64); Transformers: {args.transformers_steps} steps "
        f"(GPT-2, 2 layers, n_embd 64, batch 8 x 64 tokens). The server is killed at a third "
        f"of the steps. Medians of {args.repeat} for the SDK's rows.\n"
    )
    print(
        "| Framework | Variant | outage: killed at, after entry, killed → answering (server CPU) "
        "| fit (s) | block entry → end (s) | ratio to baseline "
        "| longest step (ms) | points on server / logged | duplicate rows | final status "
        "| runs in experiment |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    groups = group(outcomes)
    for (framework, mode, outage), runs in groups.items():
        base = median([o.wall for o in groups.get((framework, mode, False), [])])
        print(row(framework, mode, outage, runs, base, args.cap))
    print_phases(groups)
    print_targets(groups)
    print(
        "\nRatio: the median block entry → end against the same framework and mode without "
        "the outage (for the SDK, the baseline). Outage times are seconds after entering "
        "the block (kill) and after the kill (answering). A point is on the server when a "
        "row of its key has its step and value; duplicate rows are rows beyond those."
    )
    for o in outcomes:
        name = f"{o.framework}, {LABEL[(o.mode, o.outage)]}"
        r = o.result
        texts = [f"task error: {r['error']}"] if r.get("error") else []
        texts += [f"warning: {w}" for w in r.get("warnings") or []] + o.notes
        if o.repeated:
            texts.append(f"{o.repeated} point(s) logged twice with the same step and value")
        for text in texts:
            print(f"- {name}: {text}")


def print_phases(groups: dict[tuple[str, str, bool], list[Outcome]]) -> None:
    print(
        "\nWhere the time went (medians over the runs; a step's time runs from the end of "
        "the previous step, so it includes the logging calls)\n"
    )
    print(
        "| Framework | Variant | block entry → fit (s) | fit (s) | fit end → block end (s) "
        "| median step (ms): before the kill / server down / after it answered "
        "| steps in each | step time beyond the baseline's median step, while down (s) |"
    )
    print("|---|---|---:|---:|---:|---|---|---:|")
    for (framework, mode, outage), runs in groups.items():
        base_runs = groups.get((framework, "sdk", False), [])
        base = median([median([t for _, t in o.steps]) for o in base_runs]) or 0.0
        split = [o.phases() for o in runs]
        meds = [median([median(p[i]) for p in split]) for i in range(3)]
        counts = "/".join(str(round(median([len(p[i]) for p in split]) or 0)) for i in range(3))
        beyond = median([sum(t - base for t in p[1]) for p in split]) if outage else None
        print(
            f"| {framework} | {LABEL[(mode, outage)]} "
            f"| {seconds(median([o.setup for o in runs]))} "
            f"| {seconds(median([o.fit_wall for o in runs]))} "
            f"| {seconds(median([o.after_fit for o in runs]))} "
            f"| {' / '.join('-' if m is None else f'{1000 * m:.1f}' for m in meds)} "
            f"| {counts if outage else counts.split('/')[0]} | {seconds(beyond)} |"
        )


def print_targets(groups: dict[tuple[str, str, bool], list[Outcome]]) -> None:
    print("\nTargets (issue 15: the same counts, no stall beyond 1.1x the wall time)\n")
    print(
        "| Framework | SDK with the outage: points on server / logged | met "
        "| wall time vs baseline (median) | ≤ 1.1x | fit time vs baseline (median) |"
    )
    print("|---|---:|---|---:|---|---:|")
    for framework in FRAMEWORKS:
        hit, base = groups.get((framework, "sdk", True)), groups.get((framework, "sdk", False))
        if not hit or not base:
            continue
        found, logged = sum(o.found for o in hit), sum(o.logged for o in hit)
        all_kept = all(o.found == o.logged and o.logged for o in hit)
        ratio = (median([o.wall for o in hit]) or 0) / (median([o.wall for o in base]) or 1)
        fits = median([o.fit_wall for o in hit]), median([o.fit_wall for o in base])
        fit_ratio = f"{fits[0] / fits[1]:.2f}x" if fits[0] and fits[1] else "-"
        print(
            f"| {framework} | {found}/{logged} | {'yes' if all_kept else '**no**'} "
            f"| {ratio:.2f}x | {'yes' if ratio <= 1.1 else '**no**'} | {fit_ratio} |"
        )


# --- main ----------------------------------------------------------------------------------
def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs of (1) and (2), interleaved")
    parser.add_argument(
        "--outage", type=float, default=10.0, help="seconds from the kill to the server answering"
    )
    parser.add_argument("--cap", type=float, default=240.0, help="seconds a variant may take")
    parser.add_argument("--lightning-epochs", type=int, default=10)
    parser.add_argument("--lightning-steps", type=int, default=640, help="steps per epoch")
    parser.add_argument("--lightning-width", type=int, default=512, help="the MLP's hidden width")
    parser.add_argument("--transformers-steps", type=int, default=1200)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch's threads (the other cores are left to the local server)",
    )
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short training, one repeat, restart launched at the kill, no plain baseline",
    )
    parser.add_argument("--task", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick and not args.task:
        args.repeat, args.outage, args.cap = 1, 0.0, 60.0
        args.lightning_epochs, args.lightning_steps, args.transformers_steps = 3, 20, 30
    return args


def missing(frameworks: list[str]) -> list[str]:
    from importlib.util import find_spec

    needed = {name for f in frameworks for name in REQUIRES[f]}
    return sorted(name for name in needed if find_spec(name) is None)


def measure(args: argparse.Namespace, root: Path, info: dict[str, Any]) -> list[Outcome]:
    from michelangelo_mlflow.testing import TrackingServer

    server = TrackingServer(root / "server")
    try:
        t = time.monotonic()
        server.start()
        info["start"] = time.monotonic() - t
        if args.quick:  # no time for another start: the restart is launched at the kill
            args.restart_estimate = args.outage = info["start"]
        else:
            server.kill()
            t = time.monotonic()
            server.restart()
            args.restart_estimate = time.monotonic() - t
        outcomes = []
        for framework in args.frameworks:
            for _ in range(args.repeat):
                outcomes += [
                    variant(framework, "sdk", o, server, args, root) for o in (False, True)
                ]
            plain = (True,) if args.quick else (False, True)
            outcomes += [variant(framework, "plain", o, server, args, root) for o in plain]
        return outcomes
    finally:
        server.stop()


def main() -> None:
    args = parse()
    if args.task:
        framework, mode, url, experiment = args.task
        task(framework, mode, url, experiment, args)
        return
    absent = missing(args.frameworks)
    if absent:
        print(
            f"skipped: {', '.join(absent)} not installed in {sys.executable}. Run it with the "
            "frameworks session's Python: nox -s frameworks --install-only, then "
            ".nox/frameworks/bin/python benchmarks/frameworks_outage.py"
        )
        return

    from importlib.metadata import version

    import mlflow

    info: dict[str, Any] = {
        "load_before": os.getloadavg()[0],
        "mlflow": mlflow.__version__,
        "sdk": version("michelangelo-mlflow"),
        "torch": version("torch"),
        "lightning": version("pytorch-lightning"),
        "transformers": version("transformers"),
    }
    begun = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-fw-outage-") as tmp:
        outcomes = measure(args, Path(tmp), info)
    info["load_after"] = os.getloadavg()[0]
    info["wall"] = time.monotonic() - begun
    print_report(outcomes, args, info)


if __name__ == "__main__":
    main()
