"""The trained tiny model that ships in the package (issue 4), and the configs that start from it."""

import hashlib
from pathlib import Path

import pytest

from swansphere.checkpoint import SHIPPED_TINY, load_checkpoint
from swansphere.models.swansphere import SwanSphereConfig
from swansphere.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "ml" / "configs").glob("*/*.yaml"))


def test_the_shipped_checkpoint_is_the_tiny_model_its_card_describes():
    data = SHIPPED_TINY.read_bytes()
    assert len(data) <= 30 * 2**20
    card = SHIPPED_TINY.with_suffix(".md").read_text()
    assert hashlib.sha256(data).hexdigest() in card, "the model card names another file"
    assert load_checkpoint(SHIPPED_TINY).config == SwanSphereConfig.tiny()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads_and_its_committed_init_exists(path, monkeypatch):
    monkeypatch.chdir(REPO)  # the recipes run from the repository root
    config = load_config(path)
    if config.init is not None and not config.init.startswith(("runs/", "s3://")):
        assert Path(config.init).is_file(), f"{path}: init {config.init} is not in the repository"
