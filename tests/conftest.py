import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers.vectors import write_vectors


@pytest.fixture(scope="session")
def vectors_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("vectors")
    write_vectors(d)
    return d


@pytest.fixture(scope="session")
def device_env(vectors_dir, tmp_path_factory):
    """Environment for device tests run through tools/upy."""
    return {"KEYPIN_VECTORS": str(vectors_dir), "KEYPIN_TMP": str(tmp_path_factory.mktemp("dev")),
            "PATH": os.environ.get("PATH", "")}
