"""Cloud TPU accelerator types: which ones exist, how many hosts (workers) a slice
has, and the TPU VM runtime each generation boots. Standard library only: the
launchers run on a workstation that may not have the project installed.

Sizes follow Google's "TPU versions" pages: v2, v3, v4 and v5p name TensorCores
(2 per chip; v2/v3 slices have 8 cores per host, v4/v5p 4 chips = 8 cores per host);
v5e (`v5litepod`) and v6e name chips (1, 4 and 8 are one host; larger slices have 4
chips per host). On GKE, v5e/v6e slices of 8 chips are 2 machines of 4 chips.
"""

from __future__ import annotations

import dataclasses
import re

# generation -> (allowed sizes, units per host for multi-host slices, runtime version)
_GENERATIONS: dict[str, tuple[frozenset[int], int, str]] = {
    "v2": (frozenset({8, 32, 128, 256, 512}), 8, "tpu-ubuntu2204-base"),
    "v3": (frozenset({8, 32, 64, 128, 256, 512, 1024, 2048}), 8, "tpu-ubuntu2204-base"),
    "v4": (frozenset(range(8, 8193, 8)), 8, "tpu-ubuntu2204-base"),
    "v5p": (frozenset(range(8, 12289, 8)), 8, "v2-alpha-tpuv5"),
    "v5litepod": (frozenset({1, 4, 8, 16, 32, 64, 128, 256}), 4, "v2-alpha-tpuv5-lite"),
    "v6e": (frozenset({1, 4, 8, 16, 32, 64, 128, 256}), 4, "v2-alpha-tpuv6e"),
}
# Chips per TensorCore count unit: v2-v5p sizes count cores (2 per chip).
_CORES_PER_CHIP = {"v2": 2, "v3": 2, "v4": 2, "v5p": 2, "v5litepod": 1, "v6e": 1}
# Single-host v5e/v6e slices hold up to 8 chips on one VM.
_SINGLE_HOST_CHIPS = 8


@dataclasses.dataclass(frozen=True)
class TpuType:
    """One accelerator type, e.g. `v5litepod-16`."""

    name: str
    generation: str
    size: int

    @property
    def chips(self) -> int:
        return self.size // _CORES_PER_CHIP[self.generation]

    @property
    def hosts(self) -> int:
        """TPU VMs (workers) in one slice of this type."""
        _, per_host, _ = _GENERATIONS[self.generation]
        if self.generation in ("v5litepod", "v6e") and self.size <= _SINGLE_HOST_CHIPS:
            return 1
        return max(1, self.size // per_host)

    @property
    def gke_hosts(self) -> int:
        """Nodes (pods) per slice on GKE, whose v5e/v6e slices of 8 or more chips are
        made of 4-chip machines (xpk: v6e-8 is 2 x ct6e-standard-4t)."""
        if self.generation in ("v5litepod", "v6e"):
            return max(1, self.size // 4)
        return self.hosts

    @property
    def runtime_version(self) -> str:
        return _GENERATIONS[self.generation][2]


def parse_tpu_type(name: str, flag: str = "--accelerator_type") -> TpuType:
    """The accelerator type `name`, or ValueError naming `flag` and the known types."""
    match = re.fullmatch(r"(v2|v3|v4|v5p|v5litepod|v6e)-(\d+)", name or "")
    known = ", ".join(f"{g}-N" for g in _GENERATIONS)
    if not match:
        raise ValueError(
            f"{flag}={name!r} is not a Cloud TPU accelerator type; use one of {known} "
            "(e.g. v4-8, v5litepod-16, v5p-32, v6e-8)."
        )
    generation, size = match.group(1), int(match.group(2))
    sizes = _GENERATIONS[generation][0]
    if size not in sizes:
        examples = ", ".join(f"{generation}-{s}" for s in sorted(sizes)[:8])
        raise ValueError(
            f"{flag}={name!r}: {generation} slices do not come in size {size}; "
            f"valid sizes start {examples}, ..."
        )
    return TpuType(name, generation, size)


def check_shared_model_dir(model_dir: str, hosts: int, flag: str = "--model_dir") -> None:
    """Several hosts need one run directory they all see: a bucket, not a local disk."""
    if hosts > 1 and not model_dir.startswith("gs://"):
        raise ValueError(
            f"{flag}={model_dir!r} is on each worker's own disk, but the job runs on "
            f"{hosts} hosts: each would write its own part of every checkpoint and none "
            f"could resume. Use a bucket all workers can write, e.g. "
            f"{flag}=gs://BUCKET/runs/NAME."
        )
