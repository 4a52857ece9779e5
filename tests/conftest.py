import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def qm9_small(tmp_path_factory):
    """A 3,000-molecule random subset of QM9 with EDM's split codes (prepared once)."""
    from domains.molecules.qm9 import prepare_qm9

    out = tmp_path_factory.mktemp("qm9")
    return prepare_qm9(out, limit=3000, sample_seed=0)[0]
