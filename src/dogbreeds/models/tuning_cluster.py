"""Distributed keras-tuner search: one chief (the oracle), any number of workers.

keras-tuner's own distributed mode (``KERASTUNER_TUNER_ID`` / ``KERASTUNER_ORACLE_IP`` /
``KERASTUNER_ORACLE_PORT``, docs/scaling.md) hands each trial to one worker. What this module
adds is the bookkeeping the stage needs: the chief alone opens the stage's MLflow run (tagged
:data:`CHIEF_TAG`); a worker opens none, finds the chief's run and nests each of its trials
under it, so the stage has one run with one nested run per trial, whoever ran it.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import keras_tuner as kt
import mlflow
from keras_tuner.src.distribute import utils as dist_utils

CHIEF_TAG = "keras_tuner.role"


def is_worker() -> bool:
    """Whether this process is a distributed keras-tuner worker (``KERASTUNER_TUNER_ID`` not
    ``chief``, with a chief oracle): it runs trials and writes nothing else."""
    return dist_utils.has_chief_oracle() and not dist_utils.is_chief_oracle()


def wait_for_oracle(timeout: float, poll: float = 0.5) -> None:
    """Wait until the chief's oracle accepts connections (``KERASTUNER_ORACLE_IP``/``_PORT``).

    The chief serves the oracle only once its stage run is open, so a worker that waits here
    never races the chief creating the tracking store (concurrent SQLite migrations fail).

    Raises:
        TimeoutError: the oracle did not answer within ``timeout`` s.
    """
    address = (os.environ["KERASTUNER_ORACLE_IP"], int(os.environ["KERASTUNER_ORACLE_PORT"]))
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(address, timeout=poll).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the tuning chief's oracle at {address[0]}:{address[1]} "
                                   f"did not answer within {timeout:g} s: start the chief "
                                   "(KERASTUNER_TUNER_ID=chief) first") from None
            time.sleep(poll)


def chief_tags(project: str) -> dict[str, str]:
    """Tags of the chief's stage run, by which :func:`chief_run_id` finds it."""
    return {CHIEF_TAG: "chief", "keras_tuner.project": project}


def chief_run_id(experiment_id: str, project: str, timeout: float, poll: float = 1.0) -> str:
    """The running stage run of the chief for keras-tuner ``project``, waiting up to
    ``timeout`` s for the chief to open it.

    Raises:
        TimeoutError: no chief run appeared in time.
    """
    deadline = time.monotonic() + timeout
    query = (f"tags.`{CHIEF_TAG}` = 'chief' and tags.`keras_tuner.project` = '{project}' "
             "and attributes.status = 'RUNNING'")
    while True:
        runs = mlflow.search_runs([experiment_id], filter_string=query, output_format="list")
        if runs:
            return runs[0].info.run_id
        if time.monotonic() > deadline:
            raise TimeoutError(f"no running tune chief for keras-tuner project {project!r} "
                               f"after {timeout:g} s: start the chief (KERASTUNER_TUNER_ID="
                               "chief) with the same params and data")
        time.sleep(poll)


def run_worker(tuner: kt.Tuner, train_ds: Any, val_ds: Any, *, epochs: int,
               parent_run_id: str, callbacks: list | None = None, verbose: int = 2) -> None:
    """Run the trials the chief's oracle hands out until it stops, each one a nested MLflow
    run under ``parent_run_id`` (the chief's stage run)."""
    tuner.parent_run_id = parent_run_id
    try:
        tuner.search(train_ds, validation_data=val_ds, epochs=epochs,
                     callbacks=list(callbacks or []), verbose=verbose)
    finally:
        while mlflow.active_run() is not None:  # an interrupted trial's run
            mlflow.end_run(status="KILLED")
