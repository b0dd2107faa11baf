"""eanet's tuning sweeper, where Hydra looks for plugins (only `hydra_plugins.*` classes can be
a `_target_` of hydra.sweeper): conf/hydra/sweeper/tune.yaml."""
