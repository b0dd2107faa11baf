"""Benchmarks of the library beside it: `python -m eanet.bench` (throughput, scaling with the number
of patches, a real run's overhead; eanet.bench.cli) and `python -m eanet.bench.compare` (against the
seed implementation, alternating A B A B).

They build the model with the training code's own `build_compiled_model`, measure with the
instruments of `measure`, and publish through `records`.
"""
