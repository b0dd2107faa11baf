# Run from the repository root: .venv/bin/python experiments/performance/xeon-amx-fused/avx2_build_tests.py
"""The kernel tests with the library compiled for an AVX2 CPU (-march=haswell), in this process."""
import os, sys, pytest
os.environ["EANET_KERNEL_CACHE"] = "/tmp/kc_haswell"
from eanet.models import native
native.ARCH_FLAGS = (["-march=haswell"],)
native._cpu_kind = lambda: "haswell"
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "tests/test_native.py", "tests/test_layers.py", "tests/test_equivalence.py"]))
