"""The command line of the entry points: gin arguments, `--help`, logging setup.

Library code takes plain arguments; only entry points (`python -m slt.<job>`) import
this module. Gin jobs (train, eval, infer) call `parse_gin_args(argv, job)`; argparse
jobs (prepare, export, translate, slt.io.*) call `parse_args(parser, argv)`. Both set
up logging with `setup_logging`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import inspect
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

# The installed package; its gin configs ship inside it (slt/gin/).
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))  # local: the package itself
GIN_DIR = os.path.join(PACKAGE_DIR, "gin")  # local: inside the package
# The checkout (or site-packages) above the package: `git rev-parse` runs there.
REPO_ROOT = os.path.dirname(PACKAGE_DIR)  # local: the package's parent

LOG_LEVEL_ENV = "SLT_LOG_LEVEL"
THIRD_PARTY_LOG_LEVEL_ENV = "SLT_THIRD_PARTY_LOG_LEVEL"
LOG_LEVELS = ("debug", "info", "warning", "error")
# Loggers of this repository; `__main__` is the module run with `python -m`.
OWN_LOGGERS = ("slt", "__main__")


# Lines TensorFlow writes to stderr while it loads and probes for CUDA on a machine
# without a GPU: none is an error, all look like one.
HARMLESS_STARTUP_LINES = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
)


@contextlib.contextmanager
def _stderr_without(harmless: Sequence[str]):
    """Captures what anything in the process (C++ included) writes to file descriptor 2
    inside the block, then writes it back without the lines containing `harmless`."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:  # local: a scratch file
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(True) if not any(h in line for h in harmless)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def quiet_accelerator_probes() -> None:
    """On a machine with neither TPU chips nor GPUs, runs JAX on the CPU alone
    (`JAX_PLATFORMS=cpu`, unless set): with libtpu installed (the `[tpu]` and `[test]`
    extras), JAX's TPU probe otherwise prints libtpu's "could not determine TPU worker
    hostnames" block at every start. Must run before JAX starts its backends."""
    if "JAX_PLATFORMS" in os.environ:
        return
    from jax._src import hardware_utils  # reads /sys and /dev only; starts no backend

    tpu_chips, _ = hardware_utils.num_available_tpu_chips_and_device_id()
    if tpu_chips or hardware_utils.has_visible_nvidia_gpu():
        return
    if hardware_utils.num_available_amd_gpus():
        return
    import jax

    os.environ["JAX_PLATFORMS"] = "cpu"  # for the job's subprocesses
    jax.config.update("jax_platforms", "cpu")  # jax read the variable at its import


def quiet_tensorflow() -> None:
    """A start without lines that look like errors and are not; must run before
    TensorFlow and JAX start.

    Hides TensorFlow's C++ INFO and WARNING lines (TF_CPP_MIN_LOG_LEVEL=2). TensorFlow
    2.21 prints a few lines while it loads, before it reads that variable, and an
    ERROR line for its CUDA probe on a machine without a GPU: it is imported and probed
    here, and those lines (`HARMLESS_STARTUP_LINES`) are left out of what it wrote.
    Then `quiet_accelerator_probes`.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet_accelerator_probes()
    if "tensorflow" in sys.modules:
        return
    with _stderr_without(HARMLESS_STARTUP_LINES):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe, now rather than mid-job


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


def _level(value: str | None, env: str, default: str) -> int:
    name = (value or os.environ.get(env) or default).lower()
    if name not in LOG_LEVELS:
        raise ValueError(
            f"log level {name!r} (from {'--verbosity' if value else env}): "
            f"use one of {', '.join(LOG_LEVELS)}."
        )
    return getattr(logging, name.upper())


class _StderrHandler(logging.StreamHandler):
    """Writes to `sys.stderr` as it is when a record comes (tests swap it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # StreamHandler.__init__ assigns one; the property ignores it


# Third-party log messages that are no warning to the user: orbax warns about every
# checkpoint directory it opens read-only, as slt.eval, slt.infer and slt.translate do.
HARMLESS_RECORDS = ("Given directory is read only",)


def _drop_harmless_records(record: logging.LogRecord) -> bool:
    return not (
        isinstance(record.msg, str) and any(record.msg.startswith(h) for h in HARMLESS_RECORDS)
    )


def setup_logging(verbosity: str | None = None) -> None:
    """Sends log records to stderr as `HH:MM:SS LEVEL logger: message`.

    The loggers of this repository (`slt.*` and `__main__`) log at
    `verbosity`, else at `$SLT_LOG_LEVEL`, else at INFO: a job shows its progress.
    Every other logger (absl, which also carries orbax's and seqio's messages,
    tensorflow, jax, ...) logs at `$SLT_THIRD_PARTY_LOG_LEVEL`, else at WARNING, unless
    that library sets a level of its own. Levels: debug, info, warning, error.
    Entry points call this once, before the work starts; calling it again re-applies
    the levels and keeps one handler.
    """
    own = _level(verbosity, LOG_LEVEL_ENV, "info")
    third_party = _level(None, THIRD_PARTY_LOG_LEVEL_ENV, "warning")
    root = logging.getLogger()
    # absl's first message installs a plain stderr handler (logging.basicConfig); ours
    # replaces it and any earlier one of ours. Other handlers (a test's) stay.
    for handler in list(root.handlers):
        if type(handler) in (logging.StreamHandler, _StderrHandler):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler.addFilter(_drop_harmless_records)
    root.addHandler(handler)
    root.setLevel(third_party)
    # TensorFlow gives its logger a handler of its own when the root logger has none at
    # import; with ours on the root, that one would print each TF message twice.
    tf_logger = logging.getLogger("tensorflow")
    for handler in list(tf_logger.handlers):
        if type(handler) is logging.StreamHandler:
            tf_logger.removeHandler(handler)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(own)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Prints the description (the module docstring, with its example) as written and
    appends each option's default to its help, unless the help already names one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or action.default in (None, False, argparse.SUPPRESS)
            or "default" in text
        ):
            return text
        return f"{text} (default: %(default)s)".strip()


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """`parser.parse_args(argv)` plus `--verbosity`, then `setup_logging`."""
    parser.add_argument(
        "--verbosity",
        choices=LOG_LEVELS,
        default=None,
        help=f"log level of slt's messages (default: ${LOG_LEVEL_ENV}, else info)",
    )
    args = parser.parse_args(argv)
    setup_logging(args.verbosity)
    return args


# Filled by register_configurables: config dataclass -> gin name, and the id of each
# gin constant's value -> its `%name` (for --help).
_CONFIG_CLASSES: dict[type, str] = {}
_CONSTANT_NAMES: dict[int, str] = {}
# The gin-wrapped `slt.tasks.mixing.configure` (mixing rates and data roots of mixtures).
_MIXTURE_SETTINGS = None


def register_configurables() -> None:
    """Makes the config dataclasses, loaders and partitioning rules bindable from gin
    files as `slt.<name>` (idempotent)."""
    import gin

    from slt.data import landmarks
    from slt.evaluation import evaluate as evaluate_lib
    from slt.evaluation import html_report
    from slt.models import decoding, network, weights
    from slt.tasks import mixing, prepared
    from slt.training import checkpoints, input_state, partitioning, trainer
    from slt.training import trainer as trainer_lib

    global _MIXTURE_SETTINGS
    for cls in (
        network.T5Config,
        decoding.DecodingConfig,
        trainer.OptimizerConfig,
        landmarks.LandmarkConfig,
        trainer_lib.LossConfig,
        partitioning.PartitioningConfig,
        checkpoints.CheckpointConfig,
        input_state.InputConfig,
        evaluate_lib.EvalConfig,
        html_report.ReportConfig,
        partitioning.DistributedConfig,
    ):
        with contextlib.suppress(ValueError):  # already registered
            gin.external_configurable(cls, name=cls.__name__, module="slt")
        _CONFIG_CLASSES[cls] = f"slt.{cls.__name__}"
    with contextlib.suppress(ValueError):  # slt.mixture_settings.p_mt = 0.3 etc.
        _MIXTURE_SETTINGS = gin.external_configurable(
            mixing.configure, name="mixture_settings", module="slt"
        )
    with contextlib.suppress(ValueError):  # train.mixture_or_task_name = @slt.prepared_task()
        gin.external_configurable(prepared.prepared_task, name="prepared_task", module="slt")
    for loader in (weights.t5x_params_loader, weights.hf_params_loader):
        # slt.CheckpointConfig.initial_params_loader = @slt.t5x_params_loader
        with contextlib.suppress(ValueError):
            gin.external_configurable(loader, module="slt")
    for name in (
        "DATA_PARALLEL_RULES",
        "FSDP_RULES",
        "TENSOR_PARALLEL_RULES",
        "FSDP_TENSOR_PARALLEL_RULES",
    ):
        rules = getattr(partitioning, name)
        with contextlib.suppress(ValueError):
            gin.constant(f"slt.{name}", rules)
        _CONSTANT_NAMES[id(rules)] = f"%slt.{name}"


def _config_parameters(job: Callable) -> list[tuple[str, Any]]:
    """(name, default) of the job's parameters whose default is a registered config."""
    return [
        (name, p.default)
        for name, p in inspect.signature(job).parameters.items()
        if type(p.default) in _CONFIG_CLASSES
    ]


def _bind_config_defaults(job: Callable) -> None:
    """Binds `<job>.<param> = @slt.<Config>()` for each config parameter of the job, so
    a lone `slt.<Config>.<field> = ...` takes effect. Fields where the signature's
    default instance differs from the class's are bound to the instance's values."""
    import gin

    for name, default in _config_parameters(job):
        cls = type(default)
        gin.parse_config(f"{job.__name__}.{name} = @{_CONFIG_CLASSES[cls]}()")
        for field in dataclasses.fields(cls):
            value = getattr(default, field.name)
            if value != getattr(cls(), field.name):
                gin.bind_parameter(f"{_CONFIG_CLASSES[cls]}.{field.name}", value)


def _gin_value(value: Any) -> str:
    """`value` as it is written in a gin file (shortened when long)."""
    import gin

    if value is gin.REQUIRED:
        text = "<required>"
    elif id(value) in _CONSTANT_NAMES:
        text = _CONSTANT_NAMES[id(value)]
    elif isinstance(value, str):
        text = json.dumps(value)
    elif isinstance(value, list):
        text = "[" + ", ".join(_gin_value(v) for v in value) + "]"
    elif isinstance(value, tuple):
        text = (
            "(" + ", ".join(_gin_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
        )
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{_gin_value(k)}: {_gin_value(v)}" for k, v in value.items()) + "}"
    elif type(value) in _CONFIG_CLASSES:
        text = f"@{_CONFIG_CLASSES[type(value)]}()"
    elif callable(value):
        text = f"@{getattr(value, '__name__', repr(value))}"
    else:
        text = repr(value)
    return text if len(text) <= 72 else text[:68] + " ..."


def _prog(job: Callable) -> str:
    module = sys.modules.get(job.__module__)
    spec = getattr(module, "__spec__", None)
    return f"python -m {spec.name if spec else job.__module__}"


def _usage(job: Callable) -> str:
    return (
        f"usage: {_prog(job)} --gin_file=FILE [--gin_file=FILE ...] [--gin.NAME=VALUE ...]\n"
        "       [--gin_bindings='NAME = VALUE' ...] [--verbosity=LEVEL] [-h]"
    )


def gin_help(job: Callable) -> str:
    """The `--help` text of a gin job: usage, the job module's docstring (what it does,
    an example), the options, and every binding of `job` with its default, the fields
    of its config dataclasses grouped under them."""
    register_configurables()
    doc = inspect.cleandoc(getattr(sys.modules.get(job.__module__), "__doc__", None) or "")
    lines = [
        _usage(job),
        "",
        doc,
        "",
        "options:",
        "  --gin_file=FILE       a gin file; repeatable, later files override earlier ones;",
        "                        looked up in the working directory, then among the",
        "                        project's configs (listed below)",
        "  --gin.NAME=VALUE      one binding after the files, e.g.",
        "                        --gin.slt.CheckpointConfig.period=500 or",
        '                        --gin.MODEL_DIR=\\"/tmp/run\\" (strings keep their quotes)',
        "  --gin_bindings=B      one binding as gin text, e.g. 'train.seed = 1'",
        "  --verbosity=LEVEL     log level of slt's messages: debug, info, warning, error",
        f"                        (default: ${LOG_LEVEL_ENV}, else info; other libraries:",
        f"                        ${THIRD_PARTY_LOG_LEVEL_ENV}, else warning)",
        "  -h, --help            show this help and exit",
        "",
        "the project's configs (--gin_file=NAME): " + ", ".join(gin_config_names()),
        "",
        f"gin bindings of {job.__name__} with their defaults "
        "(set them in a --gin_file or as --gin.NAME=VALUE):",
    ]
    configs = []
    for name, p in inspect.signature(job).parameters.items():
        if type(p.default) in _CONFIG_CLASSES:
            configs.append((name, p.default))
        else:
            lines.append(f"  {job.__name__}.{name} = {_gin_value(p.default)}")
    for name, default in configs:
        cls_name = _CONFIG_CLASSES[type(default)]
        lines += ["", f"  {job.__name__}.{name} = @{cls_name}()"]
        lines += [
            f"    {cls_name}.{f.name} = {_gin_value(getattr(default, f.name))}"
            for f in dataclasses.fields(default)
        ]
    return "\n".join(lines) + "\n"


def _usage_error(job: Callable, message: str) -> SystemExit:
    print(f"{_usage(job)}\n{_prog(job)}: error: {message}", file=sys.stderr)
    return SystemExit(2)


def gin_search_path() -> tuple[str, ...]:
    """Where a gin file name (and a gin `include`) is looked up, in order: the working
    directory, the configs shipped in the package (`runs/demo.gin`), and the package's
    parent, so that the checkout form `gin/runs/demo.gin` keeps working from anywhere."""
    # local: gin reads its files from local disk
    return (os.getcwd(), GIN_DIR, PACKAGE_DIR)


def find_gin_file(name: str) -> str | None:
    """The path gin will read for `name`, or None when no search directory has it."""
    absolute = os.path.isabs(name)  # local: gin reads its files from local disk
    for directory in ("",) if absolute else gin_search_path():
        path = os.path.join(directory, name)  # local: gin reads its files from local disk
        if os.path.isfile(path):  # local: as above
            return path
    return None


def gin_config_names() -> list[str]:
    """The gin configs shipped with the package, as names for `--gin_file`."""
    names = []
    # local: the package's own directory
    for root, _, files in os.walk(GIN_DIR):
        for f in files:
            # local: the package's own directory
            path = os.path.relpath(os.path.join(root, f), GIN_DIR)
            names += [path] if f.endswith(".gin") else []
    return sorted(names)


def _use_gin_search_path() -> None:
    """Points gin at `gin_search_path()` only. gin also tries each relative name as a
    Python package resource and logs `ERROR ... Path not found` for every directory where
    that fails, even when a later directory has the file; the project's configs are plain
    files, so that reader is left out."""
    import gin

    gin.config._FILE_READERS[:] = [(open, os.path.isfile)]
    gin.config._LOCATION_PREFIXES[:] = list(gin_search_path())


def parse_gin_args(argv: Sequence[str], job: Callable) -> None:
    """Parses the arguments of gin job `job` (a `gin.configurable` function) and applies
    them: `--gin_file=F` (repeatable), `--gin.NAME=VALUE` and `--gin_bindings=B`
    (t5x style), `--verbosity=LEVEL`; `-h`/`--help` prints `gin_help(job)`.

    Before the user's files, each parameter of `job` whose default is a config
    dataclass is bound to `@slt.<Config>()`, so `slt.CheckpointConfig.period = 500`
    works without a `train.checkpoint_config = @slt.CheckpointConfig()` line. Gin files
    are looked up in `gin_search_path()`. A usage error
    prints the usage and exits with status 2; `--help` exits with 0.
    """
    import gin

    if "-h" in argv or "--help" in argv:
        sys.stdout.write(gin_help(job))
        raise SystemExit(0)
    files, bindings, verbosity = [], [], None
    for arg in argv:
        if arg.startswith("--gin_file="):
            files.append(arg.split("=", 1)[1])
        elif arg.startswith("--gin."):
            name, _, value = arg[len("--gin.") :].partition("=")
            if not value:
                raise _usage_error(
                    job,
                    f"bad argument {arg!r}: expected --gin.NAME=VALUE, e.g. "
                    '--gin.MODEL_DIR=\\"/tmp/run\\"',
                )
            bindings.append(f"{name} = {value}")
        elif arg.startswith("--gin_bindings="):
            bindings.append(arg.split("=", 1)[1])
        elif arg.startswith("--verbosity="):
            verbosity = arg.split("=", 1)[1]
            if verbosity.lower() not in LOG_LEVELS:
                raise _usage_error(job, f"bad argument {arg!r}: use one of {', '.join(LOG_LEVELS)}")
        else:
            raise _usage_error(
                job,
                f"unknown argument {arg!r}: use --gin_file=FILE and --gin.NAME=VALUE "
                "(--help lists the bindings)",
            )
    if not files:
        raise _usage_error(job, "no --gin_file given; e.g. --gin_file=runs/demo.gin")
    for name in files:
        if find_gin_file(name) is None:
            raise _usage_error(
                job,
                f"--gin_file={name}: no such file in the working directory ({os.getcwd()}) "
                f"or among the project's configs ({GIN_DIR}); e.g. --gin_file=runs/demo.gin "
                "(python -m slt.train --help lists them)",
            )
    setup_logging(verbosity)
    register_configurables()
    _use_gin_search_path()
    _bind_config_defaults(job)
    gin.parse_config_files_and_bindings(files, bindings)
    if _MIXTURE_SETTINGS is not None:
        _MIXTURE_SETTINGS()  # apply slt.mixture_settings bindings to the mixtures


def dataclass_dict(value: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(value).items()}


# Errors that a job's input or configuration causes (a bad binding, a missing file, an
# unwritable directory): the job prints their message as one line, without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError)


def error_message(error: BaseException) -> str:
    """The error's message without the note gin appends to errors raised in a
    configurable ("  In call to configurable ..."), which names no cause."""
    lines = str(error).splitlines() or [type(error).__name__]
    for i, line in enumerate(lines):
        if line.startswith("  In call to configurable"):
            lines = lines[:i]
            break
    return "\n".join(lines).strip() or type(error).__name__


def _release(error: BaseException | None) -> None:
    """Frees what a failed job's frames still hold (tf.data iterators, their threads,
    device buffers) while the interpreter still runs."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__
    gc.collect()


def run_job(
    main: Callable[[Sequence[str]], int | None],
    argv: Sequence[str] | None = None,
    user_errors: tuple[type[BaseException], ...] = (),
) -> NoReturn:
    """Runs an entry point's `main(argv)` and ends the process with its status.

    A user error (`USER_ERRORS`, `StorageError` and `user_errors`) prints one line,
    `ERROR: <message>` (the traceback too with `--verbosity=debug`); any other error
    prints its traceback. A job that fails ends with `os._exit` once its output is
    flushed: at a normal interpreter exit, a tf.data iterator that a traceback, a cache
    or another thread still holds is destroyed after Python has stopped its threads,
    and its destructor then waits forever for them (a failed eval hung that way). A
    job that fails must end, so that a scheduler can requeue it.
    """
    from slt import storage

    argv = sys.argv[1:] if argv is None else argv
    caught: BaseException | None = None
    try:
        result = main(argv)
        status = 0 if result is None else result
    except SystemExit as exit_:
        caught = exit_
        status = exit_.code
    except KeyboardInterrupt as error:
        caught = error
        print("\ninterrupted", file=sys.stderr, flush=True)
        status = 130
    except (*USER_ERRORS, storage.StorageError, *user_errors) as error:
        caught = error
        if logging.getLogger("slt").isEnabledFor(logging.DEBUG):
            sys.stderr.write("".join(traceback.format_exception(error)))
        print(f"\nERROR: {error_message(error)}", file=sys.stderr, flush=True)
        status = 1
    except BaseException as error:  # noqa: BLE001 (printed, and the job exits with 1)
        caught = error
        sys.stderr.write("".join(traceback.format_exception(error)))
        status = 1
    if status is None:
        status = 0
    elif not isinstance(status, int):  # SystemExit("message")
        print(status, file=sys.stderr)
        status = 1
    if status == 0:
        raise SystemExit(0)
    _release(caught)
    del caught
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
