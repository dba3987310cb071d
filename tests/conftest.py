"""Test set-up: 8 fake CPU devices (before JAX initialises) and absl flags for Grain workers."""

import os
import sys
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests compile afresh (the persistent compilation cache is tested on its own, in a subprocess).
os.environ["LOGOS_COMPILE_CACHE"] = "off"

from absl import flags  # noqa: E402

# Grain 0.2.18 worker processes read an absl flag before parsing (google/grain#1355).
flags.FLAGS.mark_as_parsed()

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (CI has it); tests needing it skip elsewhere."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


def pytest_report_header(config):
    return f"python {sys.version.split()[0]}; XLA_FLAGS={os.environ.get('XLA_FLAGS')}"
