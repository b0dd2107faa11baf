"""SIGTERM, what a scheduler (Slurm, a time limit, `timeout`) sends to stop a job, raises
KeyboardInterrupt as Ctrl-C does: a run's MLflow run then ends KILLED instead of being left
RUNNING, and a sweep's process stops its parallel workers and their queued jobs instead of dying
and leaving them running. Imports neither Keras nor MLflow: a sweep's process installs it too."""
from __future__ import annotations

import signal
import threading


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


def interrupt_on_sigterm() -> None:
    """Make SIGTERM behave like Ctrl-C in this process (main thread only, as Python requires)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
