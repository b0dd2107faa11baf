"""eanet.models.native: where the fused kernels cannot be built, a run goes on with TensorFlow's
ops and says why (docs/troubleshooting.md)."""
from __future__ import annotations

import logging

from eanet.models import native


def test_without_a_compiler_the_kernels_are_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    import tensorflow as tf

    monkeypatch.setattr(native, "_library", {})  # this process' loaded library, forgotten
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(native.SWITCH_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert native.fused_ops_for(tf.float32) is None
    assert "not available" in caplog.text and "no-such-compiler" in caplog.text
    assert not list((tmp_path / "cache").glob("*.so"))


def test_the_switch_turns_them_off_and_bfloat16_never_uses_them(monkeypatch):
    import tensorflow as tf

    monkeypatch.setenv(native.SWITCH_ENV, "0")
    assert native.fused_ops() is None
    monkeypatch.delenv(native.SWITCH_ENV)
    assert native.fused_ops_for(tf.bfloat16) is None
