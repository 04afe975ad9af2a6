"""A full or read-only spool disk is not an outage of the task: calls return, nothing is lost.

The spool directory is a real small tmpfs (the tests run as root here); where mounting
is refused the tests skip and say why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

import michelangelo_mlflow as mm
from michelangelo_mlflow.exceptions import MichelangeloMlflowWarning
from tests._proxy import FaultProxy


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "loss"))


def test_a_full_disk_during_an_outage_loses_nothing(
    proxy: FaultProxy, client: MlflowClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_disk(tmp_path / "spool", "128k") as spool:
        settings = mm.Settings(tracking_uri=proxy.url, spool_dir=spool)
        with caplog.at_level(logging.WARNING, logger="michelangelo_mlflow.spool"):
            with mm.tracking_run("full-disk", "outage", settings=settings) as run:
                proxy.mode = "503"
                for step in range(20_000):  # far more than 128 KiB: the disk fills up
                    mlflow.log_metric("loss", 0.5, step=step)
                mlflow.log_param("lr", 0.1)
                proxy.mode = "forward"
        warned = [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()]
        assert len(warned) == 1  # once, naming the directory
        assert str(spool) in warned[0]
    stored = client.get_run(run.info.run_id)
    assert steps(client, run.info.run_id) == list(range(20_000))
    assert stored.data.params == {"lr": "0.1"}
    assert stored.info.status == "FINISHED"


def fill(disk: Path) -> Path:
    """Fill a small file system to the last byte; returns the file that fills it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:  # ENOSPC: full to the last byte
        pass
    finally:
        os.close(fd)
    return filler


def test_a_disk_that_fills_up_mid_run_with_a_healthy_server(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "spool", "4m") as spool:
        ours = mm.Settings(tracking_uri=settings.effective_tracking_uri, spool_dir=spool)
        with mm.tracking_run("full-disk", "fills-up", settings=ours) as run:
            for step in range(100):
                mlflow.log_metric("loss", 0.5, step=step)
            filler = fill(spool)
            for step in range(100, 300):
                mlflow.log_metric("loss", 0.5, step=step)  # never raises
            mlflow.set_tag("phase", "full")
            filler.unlink()
            for step in range(300, 400):
                mlflow.log_metric("loss", 0.5, step=step)
    assert steps(client, run.info.run_id) == list(range(400))
    assert client.get_run(run.info.run_id).data.tags["phase"] == "full"
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_a_read_only_spool_directory_keeps_records_in_memory(
    settings: mm.Settings, client: MlflowClient, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "spool", "1m") as spool:
        remount(spool, "ro")
        ours = mm.Settings(tracking_uri=settings.effective_tracking_uri, spool_dir=spool / "x")
        with pytest.warns(MichelangeloMlflowWarning, match="kept in memory"):
            with mm.tracking_run("full-disk", "read-only", settings=ours) as run:
                for step in range(200):
                    mlflow.log_metric("loss", 0.5, step=step)
    assert steps(client, run.info.run_id) == list(range(200))
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
