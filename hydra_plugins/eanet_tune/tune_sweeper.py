"""`hydra/sweeper=tune`: the class Hydra instantiates. Everything it does is eanet.sweeps.tune;
importing this module (Hydra scans every plugin module at start-up) loads neither Optuna nor Keras."""
from eanet.sweeps import tune


class TuneSweeper(tune.OptunaSweeper):
    """eanet.sweeps.tune.OptunaSweeper under the name Hydra accepts."""
