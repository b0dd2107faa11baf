# Run from the repository root: .venv/bin/python experiments/performance/xeon-amx-fused/avx2_attention_paths.py ea|vit
"""experiments/performance/xeon-amx-fused/attention_paths.py with eanet's kernels built for AVX2 (-march=haswell) and oneDNN
limited to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, set before TensorFlow loads): an AVX2-only CPU's code
paths, on this machine."""
import os, sys, runpy
os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"
os.environ["EANET_KERNEL_CACHE"] = "/tmp/kc_haswell"
from eanet.models import native
native.ARCH_FLAGS = (["-march=haswell"],)
native._cpu_kind = lambda: "haswell"
sys.argv = ["attention_paths.py", *sys.argv[1:]]
runpy.run_path("experiments/performance/xeon-amx-fused/attention_paths.py", run_name="__main__")
