"""Full-length training of eanet's model on one GPU, timed per epoch, without TensorFlow or MLflow.

For GPU machines where only JAX is installed (TensorFlow's CUDA wheels are several GB): the same
eanet model, data loaders, augmentation and objective, trained with Keras' JAX backend on numpy
arrays. It is a measurement, not a tracked run: it prints one JSON line per epoch and a summary.

    KERAS_BACKEND=jax python benchmarks/gpu_epochs.py --data ../shared/data/cifar100.npz \
        --epochs 50 --precision mixed_bfloat16 [hydra overrides, e.g. model=vit]

Reports epoch wall time, images/s (median of epochs after the first, which includes compilation),
validation accuracy per epoch and the final test top-1 / top-5.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from eanet.config import register_configs, validate  # noqa: E402
from eanet.data import channel_statistics, load_dataset, split_validation  # noqa: E402
from eanet.training.optimization import compile_model  # noqa: E402
from eanet.training.train import build_compiled_model  # noqa: E402


class EpochClock(keras.callbacks.Callback):
    def __init__(self, images_per_epoch: int):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start
        self.seconds.append(seconds)
        print(json.dumps({"epoch": epoch + 1, "seconds": round(seconds, 2),
                          "img_per_s": round(self.images_per_epoch / seconds, 1),
                          **{k: round(float(v), 4) for k, v in (logs or {}).items()}}), flush=True)


def augmentation_on(cfg) -> bool:
    """The seed model has one switch for all of its augmentation layers; map our four onto it."""
    a = cfg.data.augmentation
    on = [a.horizontal_flip, a.rotation > 0, a.contrast > 0, a.zoom > 0]
    if any(on) and not all(on):
        raise SystemExit("gpu_epochs: the seed implementation augments all or nothing; "
                         "set all of data.augmentation.* on or all off")
    return all(on)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="CIFAR-100 copy (.npz, tarball or folder)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--precision", default="float32",
                        choices=["float32", "mixed_bfloat16", "mixed_float16"])
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--implementation", default="eanet", choices=["eanet", "seed"],
                        help="seed: the Keras example's model from --seed-dir, same loop and data")
    parser.add_argument("--seed-dir", default=str(ROOT.parent / "shared" / "bench"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for eanet.run")
    args = parser.parse_args()

    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        raw = compose("config", overrides=[
            f"data.path={args.data}", f"trainer.epochs={args.epochs}",
            f"trainer.steps_per_execution={args.steps_per_execution}", *args.overrides])
    raw.trainer.precision = args.precision
    cfg = validate(raw)
    keras.mixed_precision.set_global_policy(args.precision)
    keras.utils.set_random_seed(cfg.seed)

    data = load_dataset(cfg.data, cfg.seed)
    splits = split_validation(data, cfg.data.validation_split, cfg.seed)
    mean, variance = channel_statistics(splits.x_train)
    if args.implementation == "seed":
        sys.path.insert(0, args.seed_dir)
        from seed_reference import get_model

        model = get_model(f"{cfg.model.attention}_attention", image_size=cfg.data.image_size,
                          patch_size=cfg.model.patch_size, num_classes=data.num_classes,
                          x_adapt=splits.x_train[:5000].astype("float32"),
                          augment=augmentation_on(cfg))
        compile_model(model, cfg.optimizer, cfg.trainer)
    else:
        model = build_compiled_model(cfg, mean, variance, data.num_classes)

    def one_hot(labels):
        return keras.utils.to_categorical(labels, data.num_classes)

    clock = EpochClock(len(splits.y_train))
    started = time.perf_counter()
    model.fit(splits.x_train.astype("float32"), one_hot(splits.y_train),
              validation_data=(splits.x_val.astype("float32"), one_hot(splits.y_val)),
              batch_size=cfg.trainer.batch_size, epochs=cfg.trainer.epochs, shuffle=True,
              callbacks=[clock], verbose=0)
    train_seconds = time.perf_counter() - started
    test = model.evaluate(splits.x_test.astype("float32"), one_hot(splits.y_test),
                          batch_size=cfg.trainer.batch_size, return_dict=True, verbose=0)
    steady = clock.seconds[1:] or clock.seconds
    print(json.dumps({
        "summary": True, "implementation": args.implementation,
        "backend": keras.backend.backend(), "precision": args.precision,
        "model": cfg.model.name, "epochs": cfg.trainer.epochs, "batch_size": cfg.trainer.batch_size,
        "steps_per_execution": args.steps_per_execution,
        "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "first_epoch_s": round(clock.seconds[0], 2),
        "median_epoch_s": round(statistics.median(steady), 2),
        "img_per_s": round(len(splits.y_train) / statistics.median(steady), 1),
        "train_time_s": round(train_seconds, 1),
        "test_top1": round(test["top1"], 4), "test_top5": round(test["top5"], 4),
    }), flush=True)


if __name__ == "__main__":
    main()
