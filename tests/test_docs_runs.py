"""The shell commands of README.md and docs/*.md, run as a user copies them, reduced.

tests/test_docs_commands.py parses every `python -m slt.<job>` command and runs the
README's and docs/data.md's walk-throughs. This file runs the rest: each command's text is
read from its page, and only arguments that shrink it are added after it (the tiny model
of tests/tiny_train_flags.py, 4 steps, short feature lengths, paths into the test's
directory). A flag or binding given twice keeps the later one, so the page's own values
are replaced where the box cannot afford them and kept everywhere else.

Default run (seconds): the manifest makers, the TPU VM and GKE launchers with their dry
runs, and a check that every command of the pages is run somewhere or listed here as not
run, with the reason. Slow: everything that starts JAX (training, evaluation, export,
compile checks, Beam).
"""

from __future__ import annotations

import csv
import glob
import importlib.util
import json
import os
import re
import shlex

import pytest
from test_docs_commands import ALL, REPO, TINY, Command, _read, _run, shell_commands

# ------------------------------------------------------------------ which command runs where

# What is not run, by the command's program, and why. Their text still parses as shell
# words (Command.argv), and `python -m slt.<job>` commands among them are parsed by the
# job's own parser in test_docs_commands.py.
NOT_RUN_PROGRAMS = {
    "pip": "installs packages from the network",
    "gcloud": "needs a Google Cloud project and its credentials",
    "gsutil": "needs a Google Cloud Storage bucket",
    "docker": "needs a Docker daemon and a registry (its Dockerfile is checked to exist)",
    "xpk": "needs a GKE cluster",
    "sbatch": "needs a SLURM cluster (its script is checked with `bash -n`)",
    "squeue": "needs a SLURM cluster",
    "tail": "follows a SLURM job's log",
    "chromium": "opens a browser on report.html (the evaluation tests check the file)",
    "nice": "bench/fit_table.py compiles every row of the fit table: hours of CPU",
}
NOT_RUN_JOBS = [  # (a predicate on the command text, why)
    (lambda t: t.startswith("IMAGE="), "sets the shell variable of the Dataflow commands"),
    (lambda t: t.startswith("python -m pytest"), "the test suite itself"),
    (
        lambda t: "slt.io.video --install" in t,
        "downloads MediaPipe into a venv (network); the video commands need it",
    ),
    (lambda t: "slt.io.tfds_export" in t, "downloads a TFDS dataset (network)"),
    (
        lambda t: "data/phoenix_npz" in t,
        "prepares the output of slt.io.tfds_export, which is not run",
    ),
    (lambda t: "DataflowRunner" in t, "needs Dataflow, a Google Cloud project and a bucket"),
    (
        lambda t: t.startswith("python -m slt.plan"),
        "compiles ByT5 sizes for pods, tens of CPU minutes per candidate "
        "(tests/test_plan.py plans the tiny model over two small slices)",
    ),
    (
        lambda t: "--topology=h100" in t and importlib.util.find_spec("jax_cuda12_plugin") is None,
        'needs jax\'s CUDA plugin (pip install -e ".[gpu-compile]"), not installed here',
    ),
]

# Run by tests/test_docs_commands.py.
RUN_IN_WALK_THROUGHS = [
    ("README.md", 'python -m slt.train --gin_file=runs/demo.gin --gin.MODEL_DIR=\\"runs/demo\\"'),
    ("README.md", "python -m slt.eval "),
    ("README.md", "python -m slt.infer "),
    ("README.md", 'python -c "'),
    ("README.md", "python -m slt.translate "),
    ("README.md", "python -m slt.export "),
    ("docs/data.md", "python - <<'EOF'"),
    ("docs/data.md", "python -m slt.prepare --manifest=letters.jsonl --output_dir=data/letters "),
]


def _program(command: Command) -> str:
    argv = command.argv
    return argv[0] if argv else ""


def where_it_runs(command: Command) -> str:
    """The test that runs `command`, or "not run: <why>"; "" for none."""
    text, program = command.text, _program(command)
    for page, start in RUN_IN_WALK_THROUGHS:
        if command.page == page and text.startswith(start):
            return "test_docs_commands.py (walk-throughs, one-liners)"
    if program == "python" and text.startswith('python -c "'):
        return "test_docs_commands.py::test_documented_one_liner_runs"
    for matches, why in NOT_RUN_JOBS:
        if matches(text):
            return f"not run: {why}"
    if program in NOT_RUN_PROGRAMS:
        return f"not run: {NOT_RUN_PROGRAMS[program]}"
    if program in ("for", "done", "wait") or (
        command.page == "docs/evaluation.md" and "SLT_PROCESS_ID=$i" in text
    ):
        return "test_evaluation_page_runs_reduced (the two-process loop, as a block)"
    if program == "python" and command.argv[1:2] == ["launch/tpu_vm.py"]:
        return "test_tpu_vm_launcher_dry_runs"
    if program == "python" and command.argv[1:2] == ["launch/gke_xpk.py"]:
        return "test_gke_launcher_dry_runs"
    if program == "launch/local_multiprocess.sh":
        return "test_training_page_runs_reduced"
    module = command.argv[2] if command.argv[:2] == ["python", "-m"] else ""
    if module == "slt.manifest_makers":
        return "test_manifest_makers_run"
    if module == "slt.io.video":
        return "test_video_command_runs"
    if module == "slt.compile_check":
        return "test_compile_checks_run_reduced"
    if command.page == "docs/evaluation.md" and module.startswith("slt."):
        return "test_evaluation_page_runs_reduced"
    if module == "slt.prepare":
        return "test_prepare_commands_run"
    if command.page == "docs/models.md" and module in ("slt.train", "slt.export"):
        return "test_models_page_runs_reduced"
    if command.page in ("docs/training.md", "docs/tasks.md") and module == "slt.train":
        return "test_training_page_runs_reduced"
    if command.page == "README.md" and module == "slt.train":
        return "test_readme_training_variants_run_reduced"
    return ""


def test_every_documented_command_runs_or_says_why_not():
    """A command added to a page is run by one of the tests here or in
    test_docs_commands.py, or is listed above with the reason it is not run."""
    unplaced = [str(c) for c in ALL if not where_it_runs(c)]
    assert not unplaced, "\n".join(unplaced)
    not_run = [c for c in ALL if where_it_runs(c).startswith("not run")]
    assert len(not_run) < len(ALL) // 2, [str(c) for c in not_run]


def test_files_of_the_not_run_commands_exist():
    for command in ALL:
        argv = command.argv
        if _program(command) == "docker" and "-f" in argv:
            assert os.path.exists(os.path.join(REPO, argv[argv.index("-f") + 1])), command
        if _program(command) == "sbatch":
            script = next(a for a in argv[1:] if not a.startswith("-"))
            _run(f"bash -n {shlex.quote(os.path.join(REPO, script))}", REPO)


# ------------------------------------------------------------------ helpers


def _commands(page: str, where: str) -> list[Command]:
    """The distinct commands of `page` that `where_it_runs` places in test `where`."""
    seen, out = set(), []
    for command in shell_commands(page):
        if where_it_runs(command).startswith(where) and command.text not in seen:
            seen.add(command.text)
            out.append(command)
    return out


def _pages_commands(where: str) -> list[Command]:
    seen, out = set(), []
    for command in ALL:
        if where_it_runs(command).startswith(where) and command.text not in seen:
            seen.add(command.text)
            out.append(command)
    return out


def _ids(commands):
    return [f"{c.page}:{c.line}" for c in commands]


def _python_block(page: str, marker: str) -> str:
    """The ```python block of `page` that contains `marker`."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", _read(page), re.S) if marker in b]
    assert blocks, f"{page} has no Python block with {marker!r}"
    return blocks[0]


def _bash_block(page: str, marker: str) -> str:
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", _read(page), re.S) if marker in b]
    assert blocks, f"{page} has no bash block with {marker!r}"
    return blocks[0]


def _python(code: str, cwd) -> str:
    """Runs `code` as `python - <<'EOF'` would."""
    path = os.path.join(cwd, "_snippet.py")
    with open(path, "w") as f:
        f.write(code)
    try:
        return _run(f"python {shlex.quote(path)}", cwd)
    finally:
        os.remove(path)


# ------------------------------------------------------------------ default: launchers


LAUNCH = [c for c in ALL if _program(c) == "python" and c.argv[1:2] == ["launch/tpu_vm.py"]]


@pytest.mark.parametrize("command", LAUNCH, ids=_ids(LAUNCH))
def test_tpu_vm_launcher_dry_runs(command):
    # --dry_run prints the gcloud commands instead of running them.
    text = command.text.replace("launch/tpu_vm.py ", "launch/tpu_vm.py --dry_run ", 1)
    out = _run(text, REPO, timeout=120)
    assert "gcloud " in out, out


def test_gke_launcher_dry_runs():
    commands = _pages_commands("test_gke_launcher_dry_runs")
    assert commands
    for command in commands:
        # xpk's own --dry-run, with `echo` standing in for xpk: the xpk command is printed.
        text = command.text.replace(
            "launch/gke_xpk.py ", "launch/gke_xpk.py --dry_run --xpk=echo ", 1
        )
        out = _run(text, REPO, timeout=120)
        assert "workload create " in out and "--dry-run" in out, out


# ------------------------------------------------------------------ default: manifest makers

VTT = """WEBVTT

00:00:01.000 --> 00:00:03.000
Hello there.

00:00:03.500 --> 00:00:06.000
How are you?

00:00:12.000 --> 00:00:14.000
Fine, thanks.
"""

HOW2SIGN = (
    "VIDEO_ID\tVIDEO_NAME\tSENTENCE_ID\tSENTENCE_NAME\tSTART_REALIGNED\tEND_REALIGNED\tSENTENCE\n"
    "v1\tv1-1-rgb_front\tv1_0\tv1_0-1-rgb_front\t1.0\t3.0\tHello there.\n"
    "v1\tv1-1-rgb_front\tv1_1\tv1_1-1-rgb_front\t3.5\t6.0\tHow are you?\n"
)


def _clip_npz(path, seconds: float = 16.0, fps: float = 15.0) -> None:
    """A real recording's landmarks (a fingerspelled letter), repeated to `seconds`."""
    import numpy as np
    import spoken_to_signed

    from slt.io import arrays, pose_files

    lexicon = os.path.join(
        os.path.dirname(spoken_to_signed.__file__), "assets", "fingerspelling_lexicon"
    )
    with open(os.path.join(lexicon, "index.csv")) as f:
        letter = next(row["path"] for row in csv.DictReader(f) if row["signed_language"] == "ase")
    pose = pose_files.read_pose(os.path.join(lexicon, letter))
    n = int(seconds * fps)
    reps = -(-n // pose.num_frames)
    points = np.concatenate([pose.points] * reps)[:n]
    present = np.concatenate([pose.present] * reps)[:n]
    arrays.write_npz(str(path), points, present, fps)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """What the manifest makers read: downloaded videos' landmark files (in place of the
    videos, as docs/data_at_scale.md allows) with their captions, and How2Sign's CSV with
    its (empty) clip files in both layouts."""
    root = tmp_path_factory.mktemp("data_docs")
    (root / "downloads" / "channel").mkdir(parents=True)
    for name in ("downloads/a", "downloads/channel/b"):
        _clip_npz(root / f"{name}.npz")
        (root / f"{name}.en.vtt").write_text(VTT)
    (root / "how2sign_realigned_test.csv").write_text(HOW2SIGN)
    (root / "test_rgb_front_clips" / "raw_videos").mkdir(parents=True)
    (root / "test_raw_videos").mkdir()
    for name in ("v1_0-1-rgb_front", "v1_1-1-rgb_front"):
        (root / "test_rgb_front_clips" / "raw_videos" / f"{name}.mp4").write_bytes(b"")
    (root / "test_raw_videos" / "v1-1-rgb_front.mp4").write_bytes(b"")
    return root


MAKERS = _pages_commands("test_manifest_makers_run")


def test_manifest_maker_commands_are_found():
    assert len(MAKERS) >= 5, [str(c) for c in MAKERS]


@pytest.mark.parametrize("command", MAKERS, ids=_ids(MAKERS))
def test_manifest_makers_run(command, data_dir):
    out = _run(command.text, data_dir, timeout=120)
    output = _flag(command.argv, "output")
    counts = json.loads(next(line for line in out.splitlines() if line.startswith('{"manifest"')))
    with open(data_dir / output) as f:
        rows = [json.loads(line) for line in f]
    assert rows and counts["rows"] == len(rows), out
    assert os.path.exists(data_dir / counts["report"]), out


# ------------------------------------------------------------------ slow: prepare, Beam


PREPARES = _pages_commands("test_prepare_commands_run")


@pytest.fixture(scope="module")
def prepare_dir(data_dir):
    """`data_dir` with the manifests the prepare commands name: the makers' (clips.jsonl
    is the README's), docs/data.md's letters.jsonl and its standardisation config."""
    for command in MAKERS:
        _run(command.text, data_dir, timeout=120)
    _run(next(c for c in ALL if c.text.startswith("python - <<'EOF'")).text, data_dir)
    _python(_python_block("docs/data.md", "landmark_config.json"), data_dir)
    return data_dir


@pytest.mark.slow
@pytest.mark.parametrize("command", PREPARES, ids=_ids(PREPARES))
def test_prepare_commands_run(command, prepare_dir):
    out = _run(command.text, prepare_dir)
    line = next(line for line in out.splitlines() if '"num_written"' in line)
    summary = json.JSONDecoder().raw_decode(line[line.index("{") :])[0]
    assert summary.get("num_written", 0) > 0, out[-3000:]
    output_dir = _flag(command.argv, "output_dir")
    assert glob.glob(str(prepare_dir / output_dir / "*.tfrecord-*")), out[-3000:]


# ------------------------------------------------------------------ slow: a demo checkpoint


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """A working directory with `runs/demo`, trained by training.md's first command
    reduced, and the repository's tests/ and launch/ beside it for the commands that name
    their files."""
    root = tmp_path_factory.mktemp("demo_docs")
    os.symlink(os.path.join(REPO, "tests"), root / "tests")
    os.symlink(os.path.join(REPO, "launch"), root / "launch")
    train = shell_commands("docs/training.md")[0]
    assert train.argv[2] == "slt.train" and _binding(train.argv, "MODEL_DIR") == "runs/demo"
    _run(train.text, root, [*TINY, "--gin.slt.EvalConfig.final=False"])
    assert (root / "runs" / "demo" / "checkpoints" / "4").is_dir()
    return root


# The loop's `for`, `done` and `wait` run with its command, as one block.
EVALUATION = [
    c
    for c in _commands("docs/evaluation.md", "test_evaluation_page_runs_reduced")
    if _program(c) not in ("for", "done", "wait")
]


@pytest.mark.slow
@pytest.mark.parametrize("command", EVALUATION, ids=_ids(EVALUATION))
def test_evaluation_page_runs_reduced(command, demo_dir, tmp_path):
    extra = []
    if "SLT_PROCESS_ID=$i" in command.text:  # the loop, as its block
        text = _bash_block(command.page, "SLT_PROCESS_ID=$i")
        out = _run(text, demo_dir)
        with open(demo_dir / "runs" / "demo" / "eval_2proc" / "metrics.json") as f:
            metrics = json.load(f)
        assert metrics["fingerspelling_slt_ase_en"]["num_examples"] == 127, out[-3000:]
        return
    if "bleurt_checkpoint" in command.text:
        from test_eval_metrics import make_tiny_bleurt_checkpoint

        bleurt = make_tiny_bleurt_checkpoint(tmp_path / "bleurt")
        extra.append(f'--gin.evaluate.bleurt_checkpoint="{bleurt}"')
    if "landmark_config.json" in command.text:  # the page's Python writes it first
        _python(_python_block(command.page, "landmark_config.json"), demo_dir)
        _python(_CLIPS, demo_dir)
    if "prepared_data_dir" in command.text and not (demo_dir / "data" / "mycorpus").exists():
        prepare = next(c for c in EVALUATION if c.argv[2] == "slt.prepare")
        test_evaluation_page_runs_reduced(prepare, demo_dir, tmp_path)
    out = _run(command.text, demo_dir, extra)
    assert "Traceback" not in out, out[-3000:]
    if command.argv[2] == "slt.eval":
        assert "chrF" in out, out[-3000:]
    if "bleurt_checkpoint" in command.text:
        assert "BLEURT" in out, out[-3000:]
    if command.argv[2] == "slt.translate":
        lines = [line for line in out.splitlines() if "\t" in line]
        assert [line.split("\t")[0] for line in lines] == command.argv[-2:], out[-3000:]
    if command.argv[2] == "slt.eval" and command.text.endswith('CHECKPOINT=\\"runs/demo\\"'):
        assert (demo_dir / "runs" / "demo" / "eval_4_test" / "report.html").exists()


# clips.jsonl of docs/evaluation.md's prepare command: 8 letters of the embedded corpus.
_CLIPS = """
import csv, json, os, spoken_to_signed
root = os.path.join(os.path.dirname(spoken_to_signed.__file__), "assets", "fingerspelling_lexicon")
with open(os.path.join(root, "index.csv")) as f, open("clips.jsonl", "w") as out:
    for row in list(csv.DictReader(f))[:8]:
        clip = {"path": os.path.join(root, row["path"]), "text": row["words"]}
        out.write(json.dumps({**clip, "sign_language": "ase", "spoken_language": "en"}) + "\\n")
"""


def _binding(argv: list[str], name: str) -> str:
    """The last value of `--gin.<name>=` in `argv`, without its quotes."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--gin.{name}=")]
    assert values, f"no --gin.{name} in {argv}"
    return values[-1].strip('"')


def _flag(argv: list[str], name: str) -> str:
    return [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")][-1]


# Training commands end here: the tiny model, 4 steps, no final evaluation (the
# evaluation tests run the eval jobs).
TRAIN = [*TINY, "--gin.slt.EvalConfig.final=False"]


@pytest.mark.slow
def test_models_page_runs_reduced(demo_dir, tmp_path):
    """Each size's command with the tiny model's widths and depths (the size's other
    settings stay: bfloat16, untied logits, scanned layers, remat, FSDP); the exports of
    the demo; the fine-tune from the T5X export, into a directory of its own."""
    commands = _commands("docs/models.md", "test_models_page_runs_reduced")
    exports = [c for c in commands if c.argv[2] == "slt.export"]
    trains = [c for c in commands if c.argv[2] == "slt.train"]
    assert len(exports) >= 2 and len(trains) >= 3, [str(c) for c in commands]
    for command in exports:
        out = _run(command.text, demo_dir)
        output = command.argv[command.argv.index("--output") + 1]
        assert f"to {output}" in out and os.listdir(demo_dir / output), out[-3000:]
    t5x = next(c for c in exports if "t5x" in c.argv)
    t5x_dir = demo_dir / t5x.argv[t5x.argv.index("--output") + 1]
    for command in trains:
        extra = list(TRAIN)
        if "initial_path" in command.text:
            extra += [
                f'--gin.MODEL_DIR="{tmp_path / "finetuned"}"',
                f'--gin.slt.CheckpointConfig.initial_path="{t5x_dir}"',
            ]
        out = _run(command.text, demo_dir, extra)
        model_dir = demo_dir / _binding([*command.argv, *extra], "MODEL_DIR")
        assert (model_dir / "checkpoints" / "4").is_dir(), out[-3000:]
        if "initial_path" in command.text:
            assert f"initial params from {t5x_dir}" in out, out[-3000:]


@pytest.mark.slow
def test_training_page_runs_reduced(demo_dir, tmp_path):
    """training.md's and tasks.md's training commands, in order (the second starts from
    the first's directory), their /tmp directories moved into the test's."""
    commands = _pages_commands("test_training_page_runs_reduced")
    assert len(commands) >= 5, [str(c) for c in commands]
    moved: dict[str, str] = {}
    for command in commands:
        extra = list(TINY)
        if "EvalConfig.final=False" not in command.text and "EvalConfig.split" not in command.text:
            extra.append("--gin.slt.EvalConfig.final=False")
        model_dir = _binding(command.argv, "MODEL_DIR")
        if os.path.isabs(model_dir):
            moved[model_dir] = str(tmp_path / os.path.basename(model_dir))
            extra.append(f'--gin.MODEL_DIR="{moved[model_dir]}"')
        if "initial_path" in command.text:
            initial = _binding(command.argv, "slt.CheckpointConfig.initial_path")
            extra.append(f'--gin.slt.CheckpointConfig.initial_path="{moved[initial]}"')
        out = _run(command.text, demo_dir, extra)
        final_dir = demo_dir / moved.get(model_dir, model_dir)
        assert (final_dir / "checkpoints" / "4").is_dir(), out[-3000:]
        if "EvalConfig.split" in command.text:
            assert os.path.exists(final_dir / "eval" / "metrics.json"), out[-3000:]
        if "initial_path" in command.text:
            assert "initial params from " in out, out[-3000:]
        if command.argv[0] == "launch/local_multiprocess.sh":
            assert "[process 1] " in out, out[-3000:]


@pytest.mark.slow
def test_readme_training_variants_run_reduced(demo_dir):
    commands = _commands("README.md", "test_readme_training_variants_run_reduced")
    assert commands
    for command in commands:
        out = _run(command.text, demo_dir, TRAIN)
        model_dir = demo_dir / _binding(command.argv, "MODEL_DIR")
        assert (model_dir / "checkpoints" / "4").is_dir(), out[-3000:]


# A model that divides over 256 chips with FSDP (`embed` split over every chip), one
# layer each side, short features: a compile of seconds, not of CPU minutes.
COMPILE = [
    "--gin.slt.T5Config.emb_dim=256",
    "--gin.slt.T5Config.num_heads=2",
    "--gin.slt.T5Config.head_dim=8",
    "--gin.slt.T5Config.mlp_dim=64",
    "--gin.slt.T5Config.num_encoder_layers=1",
    "--gin.slt.T5Config.num_decoder_layers=1",
    '--gin.train.task_feature_lengths={"landmarks": 16, "inputs": 8, "targets": 8}',
]

COMPILE_CHECKS = _pages_commands("test_compile_checks_run_reduced")


@pytest.mark.slow
@pytest.mark.parametrize("command", COMPILE_CHECKS, ids=_ids(COMPILE_CHECKS))
def test_compile_checks_run_reduced(command, tmp_path):
    extra = [] if "runs/demo.gin" in command.text else list(COMPILE)  # the demo is tiny
    if any(a.startswith("--json_out=") for a in command.argv):
        extra.append(f"--json_out={tmp_path / 'report.json'}")
    out = _run(command.text, tmp_path, extra)
    assert "fits" in out, out[-3000:]
    if any(a.startswith("--json_out=") for a in command.argv):
        with open(tmp_path / "report.json") as f:
            assert json.load(f)


@pytest.mark.slow
def test_video_command_runs(tmp_path):
    video_venv = os.path.expanduser("~/.cache/slt/mediapipe-venv")
    if not os.path.isdir(video_venv):
        pytest.skip("the video environment is not installed (python -m slt.io.video --install)")
    commands = _pages_commands("test_video_command_runs")
    assert commands
    os.symlink(os.path.join(REPO, "tests"), tmp_path / "tests")
    for command in commands:
        _run(command.text, tmp_path)
        output = command.argv[-1]
        assert os.path.getsize(tmp_path / output) > 0
