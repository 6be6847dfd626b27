"""gin at the edges: command-line parsing and the configurables entry points bind.

Library code takes plain arguments; only entry points import this module.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quiet_tensorflow() -> None:
    """Silences TensorFlow's CUDA-stub chatter; must run before TF is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# XLA CPU options, measured with bench/train_step.py and bench/decode.py on jaxlib 0.10.2;
# they only affect the CPU backend. Training: YNNPACK's dot fusions plus the scheduler
# that overlaps independent ops. Decoding jobs turn the YNNPACK fusions off: they fuse
# each attention (QK^T, softmax, AV) into one kernel that ran the encoder 2x slower.
CPU_XLA_FLAGS = (
    "--xla_cpu_experimental_ynn_fusion_type=dot",
    "--xla_cpu_enable_concurrency_optimized_scheduler=true",
)
CPU_DECODING_XLA_FLAGS = (
    "--xla_cpu_experimental_ynn_fusion_type=",
    "--xla_cpu_enable_concurrency_optimized_scheduler=true",
)


def add_cpu_xla_flags(decoding: bool = False) -> None:
    """Appends the CPU flags (`CPU_DECODING_XLA_FLAGS` for jobs that only decode) to
    XLA_FLAGS, leaving any flag the user set alone; must run before JAX starts."""
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in CPU_DECODING_XLA_FLAGS if decoding else CPU_XLA_FLAGS:
        if flag.split("=")[0] not in flags:
            flags = f"{flags} {flag}".strip()
    os.environ["XLA_FLAGS"] = flags


# The gin-wrapped `tasks.mixing.configure` (mixing rates and data roots of mixtures).
_MIXTURE_SETTINGS = None


def register_configurables() -> None:
    """Makes the config dataclasses bindable from gin files (idempotent)."""
    import gin
    from slt import landmarks, partitioning, trainer
    from slt.models import decoding, network

    for cls, name in (
        (network.T5Config, "T5Config"),
        (decoding.DecodingConfig, "DecodingConfig"),
        (trainer.OptimizerConfig, "OptimizerConfig"),
        (landmarks.LandmarkConfig, "LandmarkConfig"),
    ):
        try:
            gin.external_configurable(cls, name=name, module="slt")
        except ValueError:
            pass  # already registered
    global _MIXTURE_SETTINGS
    from tasks import mixing

    try:  # slt.mixture_settings.p_mt = 0.3 etc.; applied by parse_gin_args
        _MIXTURE_SETTINGS = gin.external_configurable(
            mixing.configure, name="mixture_settings", module="slt"
        )
    except ValueError:
        pass  # already registered
    from tasks import prepared

    try:  # train.mixture_or_task_name = @slt.prepared_task() (a prepared dataset)
        gin.external_configurable(prepared.prepared_task, name="prepared_task", module="slt")
    except ValueError:
        pass  # already registered
    from slt.models import weights

    for loader in (weights.t5x_params_loader, weights.hf_params_loader):
        try:  # train.initial_params_loader = @slt.t5x_params_loader (pretrained ByT5/mT5)
            gin.external_configurable(loader, module="slt")
        except ValueError:
            pass  # already registered
    for name, rules in (
        ("DATA_PARALLEL_RULES", partitioning.DATA_PARALLEL_RULES),
        ("FSDP_RULES", partitioning.FSDP_RULES),
        ("TENSOR_PARALLEL_RULES", partitioning.TENSOR_PARALLEL_RULES),
        ("FSDP_TENSOR_PARALLEL_RULES", partitioning.FSDP_TENSOR_PARALLEL_RULES),
    ):
        try:
            gin.constant(f"slt.{name}", rules)
        except ValueError:
            pass  # already registered


def parse_gin_args(argv: Sequence[str]) -> None:
    """Parses `--gin_file=F` (repeatable) and `--gin.NAME=VALUE` (t5x style) arguments.

    Gin files are looked up relative to the working directory, then the repository.
    """
    import gin

    files, bindings = [], []
    for arg in argv:
        if arg.startswith("--gin_file="):
            files.append(arg.split("=", 1)[1])
        elif arg.startswith("--gin."):
            name, _, value = arg[len("--gin.") :].partition("=")
            if not value:
                raise SystemExit(
                    f"bad argument {arg!r}: expected --gin.NAME=VALUE, e.g. "
                    '--gin.MODEL_DIR=\\"/tmp/run\\"'
                )
            bindings.append(f"{name} = {value}")
        elif arg.startswith("--gin_bindings="):
            bindings.append(arg.split("=", 1)[1])
        else:
            raise SystemExit(f"unknown argument {arg!r}: use --gin_file=FILE and --gin.NAME=VALUE.")
    if not files:
        raise SystemExit("no --gin_file given; e.g. --gin_file=gin/runs/demo.gin")
    register_configurables()
    gin.add_config_file_search_path(os.getcwd())
    gin.add_config_file_search_path(REPO_ROOT)
    gin.parse_config_files_and_bindings(files, bindings)
    if _MIXTURE_SETTINGS is not None:
        _MIXTURE_SETTINGS()  # apply slt.mixture_settings bindings to the mixtures


def dataclass_dict(value: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(value).items()}
