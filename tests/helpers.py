"""Pieces several test files share, imported as `from helpers import ...` (pytest puts
`tests/` on the path)."""

import os
from typing import Any

from slt.models import network

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
