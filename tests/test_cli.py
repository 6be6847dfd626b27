"""The command line of the entry points: `--help`, usage errors, the gin preamble that
makes `slt.<Config>.<field> = ...` work on its own, and the logging setup.

The `--help` of every `python -m slt.<job>` runs in a subprocess (all at once, so the
JAX/TensorFlow imports of the gin jobs overlap); everything else runs in-process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import gin
import pytest

from slt import gin_utils
from slt.evaluation import evaluate as evaluate_lib
from slt.training import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@gin.configurable(denylist=[])
def cli_probe(
    *,
    steps: int = 1,
    checkpoint_config: checkpoints.CheckpointConfig = checkpoints.CheckpointConfig(),
    eval_config: evaluate_lib.EvalConfig = evaluate_lib.EvalConfig(split="validation"),
) -> tuple[int, checkpoints.CheckpointConfig, evaluate_lib.EvalConfig]:
    """A gin job with config parameters, one with a default other than its class's."""
    return steps, checkpoint_config, eval_config


@pytest.fixture(autouse=True)
def clean_gin_and_logging():
    gin.clear_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    own = {name: logging.getLogger(name).level for name in gin_utils.OWN_LOGGERS}
    yield
    gin.clear_config()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in own.items():
        logging.getLogger(name).setLevel(value)


def _gin_file(tmp_path, text: str) -> str:
    path = tmp_path / "job.gin"
    path.write_text(text)
    return f"--gin_file={path}"


# --- the gin preamble -------------------------------------------------------------


def test_config_field_binding_works_without_a_reference_line(tmp_path):
    gin_utils.parse_gin_args(
        [_gin_file(tmp_path, "slt.CheckpointConfig.period = 500\n")], cli_probe
    )
    _, checkpoint, evaluation = cli_probe()
    assert (checkpoint.period, checkpoint.keep) == (500, 3)
    assert evaluation.split == "validation"  # the signature's default, not the class's


def test_config_field_binding_works_with_a_reference_line(tmp_path):
    text = (
        "cli_probe.checkpoint_config = @slt.CheckpointConfig()\nslt.CheckpointConfig.period = 500\n"
    )
    gin_utils.parse_gin_args([_gin_file(tmp_path, text)], cli_probe)
    assert cli_probe()[1].period == 500


def test_command_line_bindings_override_files(tmp_path):
    text = 'slt.CheckpointConfig.period = 500\nslt.EvalConfig.split = "test"\n'
    gin_utils.parse_gin_args(
        [
            _gin_file(tmp_path, text),
            "--gin.slt.CheckpointConfig.period=7",
            "--gin_bindings=cli_probe.steps = 3",
        ],
        cli_probe,
    )
    steps, checkpoint, evaluation = cli_probe()
    assert (steps, checkpoint.period, evaluation.split) == (3, 7, "test")


def test_real_jobs_bind_every_config_parameter(tmp_path):
    from slt import eval as eval_job
    from slt import train as train_job

    text = (
        'train.model_dir = "/tmp/unused"\n'
        'train.mixture_or_task_name = "fingerspelling_slt_ase_en"\n'
        'train.task_feature_lengths = {"landmarks": 16, "inputs": 8, "targets": 8}\n'
        "train.batch_size = 2\n"
        "train.train_steps = 1\n"
        "slt.CheckpointConfig.period = 500\n"
    )
    gin_utils.parse_gin_args([_gin_file(tmp_path, text)], train_job.train)
    # The bound reference builds the config as train() would receive it.
    checkpoint = gin.query_parameter("train.checkpoint_config").scoped_configurable_fn()
    assert (checkpoint.period, checkpoint.keep) == (500, 3)
    config_parameters = [name for name, _ in gin_utils._config_parameters(train_job.train)]
    assert {"network_config", "checkpoint_config", "partitioning_config"} <= set(config_parameters)
    for name in config_parameters:
        assert gin.query_parameter(f"train.{name}").selector.startswith("slt.")

    gin.clear_config()
    gin_utils.parse_gin_args(
        [_gin_file(tmp_path, 'evaluate.checkpoint = "/tmp/unused"\n')], eval_job.evaluate
    )
    for name, default in gin_utils._config_parameters(eval_job.evaluate):
        built = gin.query_parameter(f"evaluate.{name}").scoped_configurable_fn()
        assert built == default


# --- usage errors and --help, in-process ----------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bogus"], "unknown argument '--bogus'"),
        (["--gin.slt.CheckpointConfig.period"], "expected --gin.NAME=VALUE"),
        (["--verbosity=loud"], "use one of debug, info, warning, error"),
        ([], "no --gin_file given"),
        (["--gin_file=runs/no_such.gin"], "--gin_file=runs/no_such.gin: no such file"),
    ],
)
def test_gin_usage_errors_exit_2_with_the_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gin_utils.parse_gin_args(argv, cli_probe)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m ")
    assert message in err


def test_gin_help_lists_bindings_and_config_fields(capsys):
    with pytest.raises(SystemExit) as exit_info:
        gin_utils.parse_gin_args(["--gin_file=ignored.gin", "--help"], cli_probe)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m ")
    assert "The command line of the entry points" in out  # this module's docstring
    assert "  cli_probe.steps = 1\n" in out
    assert "  cli_probe.checkpoint_config = @slt.CheckpointConfig()\n" in out
    assert "    slt.CheckpointConfig.period = 1000\n" in out
    assert '    slt.EvalConfig.split = "validation"\n' in out
    assert "    slt.EvalConfig.tasks = None\n" in out


@pytest.mark.parametrize("job", ["train", "eval", "infer"])
def test_gin_jobs_reject_unknown_flags(job, capsys):
    module = __import__(f"slt.{job}", fromlist=["main"])
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--bogus"])
    assert exit_info.value.code == 2
    assert "usage: python -m " in capsys.readouterr().err


def test_translate_rejects_unknown_flags(capsys):
    from slt import translate

    with pytest.raises(SystemExit) as exit_info:
        translate.main(["--bogus", "--checkpoint=x", "clip.pose"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: python -m slt.translate" in err and "unrecognized arguments: --bogus" in err


# --- logging --------------------------------------------------------------------


def test_setup_logging_shows_slt_progress_and_hides_third_party_info(capsys, monkeypatch):
    monkeypatch.delenv(gin_utils.LOG_LEVEL_ENV, raising=False)
    monkeypatch.delenv(gin_utils.THIRD_PARTY_LOG_LEVEL_ENV, raising=False)
    gin_utils.setup_logging()
    gin_utils.setup_logging()  # again: still one handler
    logging.getLogger("slt.some_module").info("slt progress")
    logging.getLogger("slt.tasks.mixing").info("tasks progress")
    logging.getLogger("absl").info("absl chatter")
    logging.getLogger("absl").warning("absl warning")
    err = capsys.readouterr().err
    assert "INFO slt.some_module: slt progress" in err
    assert "INFO slt.tasks.mixing: tasks progress" in err
    assert "absl chatter" not in err
    assert err.count("absl warning") == 1

    monkeypatch.setenv(gin_utils.THIRD_PARTY_LOG_LEVEL_ENV, "info")
    gin_utils.setup_logging("warning")
    logging.getLogger("slt.some_module").info("hidden now")
    logging.getLogger("absl").info("absl shown now")
    err = capsys.readouterr().err
    assert "hidden now" not in err and "absl shown now" in err


# --- every entry point's --help, in subprocesses ----------------------------------

# (module, what its help must contain besides "usage: python -m <module>")
ENTRY_POINTS = {
    "slt.train": [
        "python -m slt.train --gin_file=",
        "  train.model_dir = <required>\n",
        "  train.checkpoint_config = @slt.CheckpointConfig()\n",
        "    slt.CheckpointConfig.period = 1000\n",
        "    slt.PartitioningConfig.logical_axis_rules = %slt.DATA_PARALLEL_RULES\n",
    ],
    "slt.compile_check": [
        "python -m slt.compile_check --topology=v5e-256",
        "--num_slices=S",
        "  train.batch_size = <required>\n",
        "    slt.T5Config.scan_layers = False\n",
    ],
    "slt.eval": [
        "python -m slt.eval --gin_file=",
        "  evaluate.checkpoint = <required>\n",
        "  evaluate.partitioning_config = @slt.PartitioningConfig()\n",
    ],
    "slt.experiment": [
        "python -m slt.experiment --gin_file=",
        "  study.output_dir = <required>\n",
        "  study.seeds = (0, 1)\n",
    ],
    "slt.infer": [
        "python -m slt.infer --gin_file=",
        "  infer.output_dir = <required>\n",
        "  infer.partitioning_config = @slt.PartitioningConfig()\n",
    ],
    "slt.translate": ["python -m slt.translate --checkpoint", "--source_lang"],
    "slt.prepare": ["python -m slt.prepare --manifest=", "--examples_per_shard", "--runner"],
    "slt.manifest_makers": ["python -m slt.manifest_makers youtube --input_dir=", "how2sign"],
    "slt.export": ["python -m slt.export --checkpoint", "--format {hf,t5x}"],
    "slt.plan": ["python -m slt.plan", "--steps STEPS", "--plan_dir", "chip-hours"],
    "slt.io.video": ["python -m slt.io.video VIDEO.mp4 OUT.npz", "--install"],
    "slt.io.tfds_export": ["python -m slt.io.tfds_export --tfds_name=", "--text_key"],
}
# Their unknown-flag error, in subprocesses too where it is cheap (no JAX import).
LIGHT_ENTRY_POINTS = (
    "slt.prepare",
    "slt.manifest_makers",
    "slt.export",
    "slt.io.video",
    "slt.io.tfds_export",
)


@pytest.fixture(scope="module")
def runs():
    """Starts every subprocess at once; {(module, flag): (status, stdout, stderr)}."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    commands = {(module, "--help"): module for module in ENTRY_POINTS}
    commands.update({(module, "--bogus"): module for module in LIGHT_ENTRY_POINTS})
    processes = {
        key: subprocess.Popen(
            [sys.executable, "-m", module, key[1]],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key, module in commands.items()
    }
    results = {}
    for key, process in processes.items():
        out, err = process.communicate(timeout=600)
        results[key] = (process.returncode, out, err)
    return results


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_help_prints_usage_options_and_example(module, runs):
    status, out, err = runs[(module, "--help")]
    assert status == 0, err
    assert out.startswith(f"usage: python -m {module} "), out[:200]
    for text in ENTRY_POINTS[module]:
        assert text in out, f"{module} --help lacks {text!r}"
    assert "--verbosity" in out


@pytest.mark.parametrize("module", LIGHT_ENTRY_POINTS)
def test_unknown_flag_prints_usage_and_exits_2(module, runs):
    status, out, err = runs[(module, "--bogus")]
    assert status == 2, (out, err)
    assert f"usage: python -m {module} " in err
