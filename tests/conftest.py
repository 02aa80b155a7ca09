import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: ../shared/data/orlib beside the checkout, when present.
ORLIB_DIR = os.path.join(os.path.dirname(ROOT), "shared", "data", "orlib")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
