"""Each piece of eanet.training.startup's overlapped work, timed alone in a fresh process: what
overlapping it could save at most."""
import gc, sys, tempfile, time, os
piece = sys.argv[1]
if piece == "mlflow":  # what the helper process overlapped: import MLflow, create a store, plan
    t = time.perf_counter()
    import mlflow
    from mlflow.tracking import MlflowClient
    with tempfile.TemporaryDirectory() as d:
        mlflow.set_tracking_uri(f"sqlite:///{d}/mlflow.db")
        MlflowClient().search_experiments()
        print(f"{piece} {time.perf_counter() - t:.2f}")
elif piece == "data":  # what the data thread overlapped
    from eanet.config import DataConfig
    from eanet.data import prepare_data
    cfg = DataConfig(name="cifar100", path=sys.argv[2])
    t = time.perf_counter(); prepare_data(cfg, 0); print(f"{piece} {time.perf_counter() - t:.2f}")
elif piece in ("import_gc_on", "import_gc_off"):  # what pausing the collector saved
    import eanet
    if piece == "import_gc_off":
        gc.disable()
    t = time.perf_counter(); import eanet.training.train; print(f"{piece} {time.perf_counter() - t:.2f}")
