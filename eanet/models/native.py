"""eanet's fused CPU kernels (eanet/models/csrc/): compiled on first use against the TensorFlow
that is installed, cached, and loaded.

TensorFlow runs each of these computations as a chain of ops, each one pass over its tensors in
memory; the kernels do the same arithmetic in one pass, block by block in cache:
- fused_attention.cc (with attention_block.h): a whole attention call, score matmul,
  normalisation, dropout and read-out, and its gradient recomputing them;
- dropout_mask.cc, gelu_dropout.cc, layer_norm.cc (with dropout_stream.h): the 16-bit dropout
  mask and dropout (the same Philox stream as TensorFlow's, bit for bit), the MLP's
  GELU-then-dropout, layer normalisation.
eanet.models.kernels makes them differentiable functions, and eanet.models.speed alone decides
where they run.

They are built into one library with the C++ compiler (`$CXX`, default g++) and the flags
`tf.sysconfig` gives, for this CPU (`-march=native`), into a cache folder (`$EANET_KERNEL_CACHE`,
default ~/.cache/eanet/kernels), one library per build key (`build_key`: the sources,
TensorFlow's version and flags, the compiler's identity and version, the flags below and the
CPU features `-march=native` means to that compiler, so a library built for a newer CPU is never
loaded on an older one); `make venv` builds it (`python -m eanet.models.native`). A cached
library that fails to load is rebuilt once. The kernels check every input's rank and shape
(OP_REQUIRES: a clear error) and give what TensorFlow's ops give for zero-size axes (empty
results, zeros for sums over nothing). Eigen's own assertions stay on (no -DNDEBUG) as a last
net: an input no check foresaw stops the process with a message instead of giving a wrong
gradient. Where the library cannot be built or loaded (no compiler, another TensorFlow ABI),
`fused_ops` warns once and runs use Keras' ops, which compute the same function.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")
SOURCES = tuple(CSRC / name for name in ("fused_attention.cc", "dropout_mask.cc",
                                         "gelu_dropout.cc", "layer_norm.cc"))
HEADERS = (CSRC / "attention_block.h", CSRC / "dropout_stream.h")
CACHE_ENV = "EANET_KERNEL_CACHE"
# -march=native, minus AVX512-FP16: TensorFlow's bundled Eigen headers do not compile with it
# under GCC 12. Compilers that do not know the flag get -march=native alone.
ARCH_FLAGS = (["-march=native", "-mno-avx512fp16"], ["-march=native"])
COMPILE_FLAGS = ("-c", "-fPIC", "-O3", "-w")  # -w: TensorFlow's headers warn a lot

KEEP_LEVELS = 2**16  # the fused dropout draws 16 random bits per element (csrc/dropout_stream.h)

_lock = threading.Lock()
_library: dict[str, Optional[Any]] = {}


def keep_threshold(rate: float) -> int:
    """The fused dropout's keep threshold for dropout `rate`: an element is kept when its 16 random
    bits, read as an integer, are at least round(rate * 2**16). A rate within 2**-17 of 1 would
    reach 2**16, keep nothing and scale by 1 / 0: refused (config validation refuses it first)."""
    threshold = round(rate * KEEP_LEVELS)
    if not 0 <= threshold < KEEP_LEVELS:
        raise ValueError(f"Expected a dropout rate in [0, 1 - 2**-17) (16-bit keep threshold "
                         f"round(rate * 65536) below 65536). Received: rate={rate!r}")
    return threshold


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "eanet" / "kernels"


def _run(command: list[str]) -> str:
    """A command's standard output, or why it could not run (part of a key, never an error)."""
    try:
        done = subprocess.run(command, input="", capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        return f"cannot run {command[0]}: {error}"
    return done.stdout if done.returncode == 0 else f"{command[0]} failed: {done.stderr[-500:]}"


def compiler_identity(cxx: str) -> str:
    """`$CXX --version`: which compiler, which version (its code, its intrinsics, its ABI)."""
    return _run([cxx, "--version"])


def cpu_features(cxx: str) -> str:
    """The CPU features `-march=native` turns on for the compiler `cxx` on this machine, on every
    platform: the compiler's predefined macros (__AVX512F__, __ARM_FEATURE_SVE, ...), plus
    /proc/cpuinfo's flags where it exists."""
    macros = _run([cxx, "-x", "c++", "-march=native", "-E", "-dM", "-"])
    try:
        cpuinfo = [line for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith(("flags", "Features"))][:1]
    except OSError:
        cpuinfo = []
    return "\n".join(sorted(macros.splitlines()) + cpuinfo)


def _compile(commands: list[list[str]]) -> Optional[str]:
    """Runs the compiler commands side by side; None when all succeed, else the first error's
    last line."""
    try:
        running = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True) for command in commands]
    except OSError as error:  # no compiler at all
        raise RuntimeError(f"cannot run {commands[0][0]}: {error}") from None
    errors = [(process.communicate()[1], process.returncode) for process in running]
    failed = [stderr for stderr, code in errors if code != 0]
    return (failed[0].strip().splitlines()[-1:] or ["(no output)"])[0] if failed else None


def compiler() -> str:
    """The C++ compiler's command."""
    return os.environ.get("CXX", "g++")


def build_key(tf) -> str:
    """What the library's machine code depends on, hashed: the sources, TensorFlow's version,
    compiler and flags, this module's flags, the compiler's identity and the CPU's features."""
    cxx = compiler()
    parts = [*(source.read_bytes() for source in SOURCES + HEADERS), tf.__version__.encode(),
             tf.sysconfig.get_build_info().get("cpu_compiler", "").encode(),
             repr((COMPILE_FLAGS, ARCH_FLAGS, tf.sysconfig.get_compile_flags(),
                   tf.sysconfig.get_link_flags())).encode(),
             cxx.encode(), compiler_identity(cxx).encode(), cpu_features(cxx).encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def library_path(tf) -> Path:
    """Where the library for this build key lives in the cache."""
    return cache_dir() / f"eanet_kernels-{build_key(tf)}.so"


def _build(tf, target: Path) -> None:
    """Compiles each source on its own process (compiling them is slow), then links them."""
    cxx = compiler()
    error = None
    for arch in ARCH_FLAGS:
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            objects = [str(Path(tmp) / f"{source.stem}.o") for source in SOURCES]
            built = Path(tmp) / target.name
            error = _compile([[cxx, *COMPILE_FLAGS, *arch, *tf.sysconfig.get_compile_flags(),
                               str(source), "-o", obj] for source, obj in zip(SOURCES, objects)])
            error = error or _compile([[cxx, "-shared", *objects, "-o", str(built),
                                        *tf.sysconfig.get_link_flags()]])
            if error is None:
                os.replace(built, target)  # whole or not at all, for concurrent sweep jobs
                return
    names = ", ".join(source.name for source in SOURCES)
    raise RuntimeError(f"{cxx} could not build {names}: {error}")


def _load() -> Any:
    """The library for this build key: loaded from the cache, built first where it is missing,
    and rebuilt once where the cached file does not load (a truncated copy, another machine's)."""
    import tensorflow as tf

    target = library_path(tf)
    target.parent.mkdir(parents=True, exist_ok=True)
    # One build at a time: the other jobs of a sweep wait for it, then load it.
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = target.exists()
        if not cached:
            log.info("building eanet's fused CPU kernels into %s (once per machine)", target)
            _build(tf, target)
        try:
            return tf.load_op_library(str(target))
        except Exception as error:
            if not cached:
                raise
            reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
            log.info("the cached kernels in %s do not load (%s); rebuilding them", target, reason)
            _build(tf, target)  # once: a second failure falls back (fused_ops)
            return tf.load_op_library(str(target))


def fused_ops() -> Optional[Any]:
    """The loaded op library (built first where it is missing), or None where it cannot be built
    or loaded here: one warning, and eanet.models.speed chooses Keras' paths."""
    with _lock:
        if "ops" not in _library:
            try:
                _library["ops"] = _load()
            except Exception as error:  # any failure: Keras' own ops compute the same
                log.warning("eanet's fused CPU kernels are not available (%s); using "
                            "Keras' ops instead (same results, slower on a CPU)", error)
                _library["ops"] = None
        return _library["ops"]


if __name__ == "__main__":  # `python -m eanet.models.native` (make venv): build now, not in the first run
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    library = fused_ops()
    print("eanet's fused CPU kernels:", "ready" if library is not None else
          "not available (runs use Keras' ops)")
