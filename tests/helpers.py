"""Pieces several test files share, imported as `from helpers import ...` (pytest puts
`tests/` on the path)."""

import os

# Real recordings the tests read; tests/data/README.md says what they are and where they
# come from.
TEST_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
