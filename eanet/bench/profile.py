"""Where a training step's time goes, by TensorFlow op type: `python -m eanet.bench bench.mode=profile`.

The model and pipeline `train` would build (random uint8 images, as the throughput mode) are fitted
for `warmup` steps, then TensorFlow's profiler records `steps` more. The host plane of the trace
(xplane.pb, read with the protobuf TensorFlow ships) holds one event per executed op; their wall
times are summed by op type (MatMul, Softmax, StatelessRandomUniformV2, …) and reported per step
with their share of the summed op time. Ops run on two threads in parallel, so the shares are of
op time, not of the step's wall time. TensorFlow backend only.
"""
from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from eanet.config import Config

PROFILE_COLUMNS = ["model", "op_type", "ms_per_step", "share", "count_per_step"]


def op_times(logdir: Path) -> tuple[dict[str, float], dict[str, int]]:
    """Summed durations (ms) and counts of the TensorFlow ops in a profiler log folder."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for path in logdir.rglob("*.xplane.pb"):
        space = xplane_pb2.XSpace()
        space.ParseFromString(path.read_bytes())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            for line in plane.lines:
                if line.name != "TensorFlow Ops" and not line.name.startswith("tf_Compute"):
                    continue  # the executor threads' op events; not the Python or framework lines
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name
                    if name.count(":") != 1:
                        continue  # an op is "<node name>:<op type>"; "ExecutorState::Process" not
                    op_type = name.split(":")[1]
                    totals[op_type] += event.duration_ps / 1e9
                    counts[op_type] += 1
    return totals, counts


def measure_profile(cfg: Config, steps: int, warmup: int) -> list[dict[str, Any]]:
    import tensorflow as tf

    from eanet.bench.measure import random_training

    model, train_ds = random_training(cfg, steps, warmup)
    batches = iter(train_ds)
    for _ in range(warmup):
        model.train_on_batch(*next(batches))
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            model.train_on_batch(*next(batches))
        tf.profiler.experimental.stop()
        totals, counts = op_times(Path(logdir))
    if not totals:
        raise RuntimeError("the profiler recorded no TensorFlow ops (is the backend TensorFlow?)")
    whole = sum(totals.values())
    return [{"measurement": "profile", "model": cfg.model.name, "op_type": op,
             "ms_per_step": round(ms / steps, 2), "share": round(ms / whole, 4),
             "count_per_step": counts[op] // steps}
            for op, ms in sorted(totals.items(), key=lambda item: -item[1])]
