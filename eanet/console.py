"""What a run prints: eanet's own lines, and TensorFlow's and MLflow's only when asked.

By default (`library_logs=false`) a run hides the libraries' start-up and progress messages, which
say nothing about the run: TensorFlow's oneDNN and CPU-instruction notices (and on GPUs its
"Unable to register cuDNN factory" lines), MLflow's INFO lines (database creation, system metrics
monitoring) and its "dataset source can be interpreted in multiple ways" warning. Their warnings
and errors about the run still show. `library_logs=true` leaves all of it as the libraries print
it. Settings the user made (`TF_CPP_MIN_LOG_LEVEL`, `MLFLOW_LOGGING_LEVEL`) are kept.

TensorFlow writes its start-up notices from C++ while it is imported, before its log level can
apply, straight to the process' stderr; `quiet_libraries` therefore imports it itself, with that
stream filtered line by line: call it after the config is checked (a bad value should not wait
for TensorFlow) and before anything imports Keras or TensorFlow.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

# Lines TensorFlow prints from C++ while it loads: nothing about the run.
TENSORFLOW_NOTICES = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "Unable to register cuDNN factory", "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory", "computation placer already registered",
    "TF-TRT Warning: Could not find TensorRT",
)
MLFLOW_WARNINGS = ("The specified dataset source can be interpreted in multiple ways",)


def quiet_libraries(library_logs: bool) -> None:
    """Hide the libraries' messages unless `library_logs`; then load TensorFlow, if it is the
    backend and not loaded yet, without its start-up notices."""
    if library_logs:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO and WARNING, once loaded
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when MLflow is imported
    if "mlflow" in sys.modules and os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING":
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    for message in MLFLOW_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    from eanet.backend import configured_backend, installed

    if (configured_backend() == "tensorflow" and "tensorflow" not in sys.modules
            and installed("tensorflow")):
        with native_stderr_without(TENSORFLOW_NOTICES):
            import tensorflow  # noqa: F401


@contextlib.contextmanager
def native_stderr_without(notices: tuple[str, ...]) -> Iterator[None]:
    """Within the block, the process' stderr (file descriptor 2, which C++ code writes to) goes
    to a temporary file; afterwards its lines are written to stderr, less those containing one of
    `notices`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if not any(notice in line for notice in notices)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
