"""The entry points' XLA CPU flags: training and decoding jobs get different ones, and a
flag the user already set is never overridden."""

import os

from slt import gin_utils


def test_training_flags_keep_ynn_dot_fusions(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    gin_utils.add_cpu_xla_flags()
    flags = os.environ["XLA_FLAGS"].split()
    assert "--xla_cpu_experimental_ynn_fusion_type=dot" in flags
    assert "--xla_cpu_enable_concurrency_optimized_scheduler=true" in flags


def test_decoding_flags_turn_ynn_fusions_off(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    gin_utils.add_cpu_xla_flags(decoding=True)
    flags = os.environ["XLA_FLAGS"].split()
    assert "--xla_cpu_experimental_ynn_fusion_type=" in flags
    assert not any(f.startswith("--xla_cpu_experimental_ynn_fusion_type=d") for f in flags)


def test_user_flags_win(monkeypatch):
    user = "--xla_force_host_platform_device_count=8 --xla_cpu_experimental_ynn_fusion_type=dot"
    monkeypatch.setenv("XLA_FLAGS", user)
    gin_utils.add_cpu_xla_flags(decoding=True)
    assert os.environ["XLA_FLAGS"] == (
        user + " --xla_cpu_enable_concurrency_optimized_scheduler=true"
    )
