"""Pieces several test files share, imported as `from helpers import ...` (pytest puts
`tests/` on the path)."""

import os
import re
import sys
from typing import Any

import numpy as np
from tiny_train_flags import TINY_TRAIN_FLAGS

from slt.models import model as model_lib
from slt.models import network
from slt.training import partitioning
from slt.training import trainer as trainer_lib


def alarming_lines(output: str) -> list[str]:
    """The lines of a job's output that look like errors or warnings to a user: absl's
    `E0000 ...`/`W0000 ...`, `WARNING`, `ERROR`, `error`, `Traceback`."""
    pattern = re.compile(r"^[EWF]\d{4} |WARNING|ERROR|[Ee]rror|Traceback")
    return [line for line in output.splitlines() if pattern.search(line)]


# Real recordings the tests read; tests/data/README.md says what they are and where they
# come from.
TEST_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def tiny_t5_config(**overrides: Any) -> network.T5Config:
    """A network small enough to build and train in a CPU test.

    One encoder and one decoder layer, width 32, 2 heads of 16, MLP 64 and the default
    384-id ByT5 vocabulary; `overrides` replaces any field (a test that needs a deeper
    stack, another vocabulary or a CTC head says so at the call).
    """
    fields = {
        "emb_dim": 32,
        "num_heads": 2,
        "head_dim": 16,
        "mlp_dim": 64,
        "num_encoder_layers": 1,
        "num_decoder_layers": 1,
    }
    return network.T5Config(**{**fields, **overrides})


# The trainer tests' network and batch: 4 rows, prompts of 6 tokens, 10 frames (5 encoder
# positions at stride 2), 7 target tokens.
TRAINER_CONFIG = tiny_t5_config(landmark_stride=2)
TRAINER_SHAPES = {
    "encoder_input_tokens": (4, 6),
    "encoder_landmarks": (4, 10, 255),
    "encoder_landmark_mask": (4, 10),
    "decoder_input_tokens": (4, 7),
    "decoder_target_tokens": (4, 7),
    "decoder_loss_weights": (4, 7),
}


def trainer_batch(seed: int = 0) -> dict[str, np.ndarray]:
    """A random batch of `TRAINER_SHAPES`: 5 to 10 real frames a row, and targets of 4
    tokens, EOS, then 2 of padding."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(3, 40, (4, 7)).astype(np.int32)
    targets[:, -2:] = 0
    targets[:, -3] = 1
    return {
        "encoder_input_tokens": rng.integers(3, 40, (4, 6)).astype(np.int32),
        "encoder_landmarks": rng.random((4, 10, 255)).astype(np.float32),
        "encoder_landmark_mask": (np.arange(10) < rng.integers(5, 11, (4, 1))).astype(np.int32),
        "decoder_input_tokens": np.concatenate([np.zeros((4, 1), np.int32), targets[:, :-1]], 1),
        "decoder_target_tokens": targets,
        "decoder_loss_weights": (targets > 0).astype(np.int32),
    }


def make_trainer(optimizer_name: str = "adamw") -> trainer_lib.Trainer:
    """A data-parallel Trainer of `TRAINER_CONFIG` over all devices, learning rate 3e-3."""
    mesh = partitioning.make_mesh()
    model = model_lib.EncoderDecoderModel(network.Transformer(TRAINER_CONFIG))
    optimizer = trainer_lib.make_optimizer(
        trainer_lib.OptimizerConfig(name=optimizer_name, learning_rate=3e-3)
    )
    return trainer_lib.Trainer(
        model, optimizer, mesh, partitioning.DATA_PARALLEL_RULES, TRAINER_SHAPES
    )


def train_command(model_dir: str | os.PathLike, steps: int, *extra: str) -> list[str]:
    """`python -m slt.train` of the tiny model (`TINY_TRAIN_FLAGS`) for `steps` steps in
    `model_dir` (local or gs://), its learning rate decaying to the last step; `extra`
    gin flags come last, so they override these."""
    return [
        sys.executable,
        "-m",
        "slt.train",
        *TINY_TRAIN_FLAGS,
        f'--gin.MODEL_DIR="{model_dir}"',
        f"--gin.train.train_steps={steps}",
        f"--gin.slt.OptimizerConfig.decay_steps={steps}",
        *extra,
    ]


# A tiny job for `python -m slt.compile_check`: the demo model at lengths 16/8/8, batch 16.
COMPILE_CHECK_GIN = """
include 'models/tiny.gin'
train.task_feature_lengths = {"landmarks": 16, "inputs": 8, "targets": 8}
train.batch_size = 16
slt.EvalConfig.batch_size = 8
"""


def run_compile_check(tmp_path: Any, name: str, *args: str, timeout: int = 600) -> tuple[Any, dict]:
    """Runs `python -m slt.compile_check` on COMPILE_CHECK_GIN with `args`, writing its
    report to `tmp_path/<name>.json`; returns the finished process and the report ({}
    when none was written). XLA_FLAGS and JAX_PLATFORMS are not passed on, so the
    command picks its own devices as a user's would."""
    import json
    import subprocess

    gin_file = tmp_path / "job.gin"
    gin_file.write_text(COMPILE_CHECK_GIN)
    json_out = tmp_path / f"{name}.json"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "slt.compile_check",
            f"--gin_file={gin_file}",
            f"--json_out={json_out}",
            *args,
        ],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    report = json.loads(json_out.read_text()) if json_out.exists() else {}
    return result, report
