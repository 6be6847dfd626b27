"""The per-chip figures a step-time prediction needs, in one table.

Every figure is a public one: the Cloud TPU system-architecture pages for TPU v4, v5e,
v5p and v6e, and NVIDIA's data sheets for A100, H100 and H200 with their NVLink and the
network of a DGX / HGX host (docs/fit.md, "Where the figures come from", names each
source). A figure a source does not give is `None`, never a guess: a step that needs it
gets no collective term for those links, and its report says so.

Bandwidths are bytes per second. `link_bandwidth` is what one chip sends per second
over the fast links (ICI or NVLink) that one ring of a collective uses;
`net_bandwidth` what it sends per second over the slow network between slices or
hosts (DCN, InfiniBand).
"""

from __future__ import annotations

import dataclasses

GB = 1e9


@dataclasses.dataclass(frozen=True)
class ChipRates:
    """One accelerator chip's peak rates and its links.

    `ici_bandwidth` is the chip's bidirectional fast-link bandwidth as the data sheet
    gives it (all ports, both directions); `ici_ports` how many links carry it;
    `torus_dims` 2 or 3 for a TPU torus, 0 for GPUs on an NVLink switch (every GPU of
    a host reaches every other at the full rate). `net_bandwidth` is per chip, one
    direction: DCN for TPU slices, the host's network interfaces (one per GPU) for GPU
    hosts."""

    name: str
    peak_flops: float  # dense bf16 FLOP/s
    hbm_bandwidth: float  # bytes/s
    ici_bandwidth: float | None  # bytes/s, bidirectional, per chip
    ici_ports: int
    torus_dims: int
    net_bandwidth: float | None  # bytes/s, one direction, per chip
    fast_link: str = "ICI"
    slow_link: str = "DCN"

    @property
    def link_bandwidth(self) -> float | None:
        """Bytes/s one chip sends over one link in one direction."""
        if self.ici_bandwidth is None:
            return None
        return self.ici_bandwidth / self.ici_ports / 2

    def fast_send_bandwidth(self, torus_dims_spanned: int) -> float | None:
        """Bytes/s a chip sends in a collective over the fast links.

        On a TPU torus a ring along one dimension uses that dimension's two links (one
        each way), so a group spread over k dimensions sends over 2k links. On an
        NVLink switch every GPU sends at half its bidirectional NVLink bandwidth,
        whatever the group."""
        if self.ici_bandwidth is None:
            return None
        if self.torus_dims == 0:
            return self.ici_bandwidth / 2
        return 2 * max(torus_dims_spanned, 1) * self.link_bandwidth


# Cloud TPU pages: peak bf16 compute, HBM bandwidth and bidirectional ICI bandwidth per
# chip, ICI ports, torus. DCN per chip: v5p's page gives 50 Gbps; v5e's and v6e's give
# the pod's data-centre network bandwidth (6.4 and 25.6 Tbps over 256 chips); v4's page
# gives none. v4's ICI: the page gives the pod's all-reduce bandwidth, 1.1 PB/s over
# 4,096 chips, i.e. 268 GB/s per chip one way, 537 GB/s both ways over 6 ports.
TPU_RATES = {
    "v4": ChipRates("TPU v4", 275e12, 1200 * GB, 537 * GB, 6, 3, None),
    "v5e": ChipRates("TPU v5e", 197e12, 819 * GB, 400 * GB, 4, 2, 6.4e12 / 8 / 256),
    "v5p": ChipRates("TPU v5p", 459e12, 2765 * GB, 1200 * GB, 6, 3, 50e9 / 8),
    "v6e": ChipRates("TPU v6e", 918e12, 1638 * GB, 800 * GB, 4, 2, 25.6e12 / 8 / 256),
}

# NVIDIA data sheets: dense bf16 Tensor Core FLOP/s, HBM bandwidth, NVLink bandwidth per
# GPU (bidirectional: A100 600 GB/s over 12 links, H100 and H200 900 GB/s over 18), and
# the DGX host's network: one ConnectX NIC per GPU, 200 Gb/s HDR on DGX A100, 400 Gb/s
# NDR on DGX H100 / H200.
_GPU = {"fast_link": "NVLink", "slow_link": "network"}
GPU_RATES = {
    "a100": ChipRates("A100 SXM 80GB", 312e12, 2039 * GB, 600 * GB, 12, 0, 200e9 / 8, **_GPU),
    "h100": ChipRates("H100 SXM", 989e12, 3350 * GB, 900 * GB, 18, 0, 400e9 / 8, **_GPU),
    "h200": ChipRates("H200 SXM", 989e12, 4800 * GB, 900 * GB, 18, 0, 400e9 / 8, **_GPU),
}


def rates_for(platform: str, kind: str) -> ChipRates | None:
    """The rates of chip `kind` ("v5e", "h100", ...) on `platform`; None for CPU devices
    (no public rates: a prediction for them would be made up)."""
    if platform == "tpu":
        return TPU_RATES[kind]
    if platform == "gpu":
        return GPU_RATES[kind]
    return None
