"""Settings are traitlets, so %config and config files reach them."""

from __future__ import annotations

import pytest
from traitlets import TraitError
from traitlets.config import Config

from topaz_nb.api.client import DEFAULT_BASE_URL
from topaz_nb.settings import Topaz


def test_defaults_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("TOPAZ_API_URL", raising=False)
    monkeypatch.setenv("TOPAZ_NB_CACHE", str(tmp_path))
    settings = Topaz()
    assert settings.base_url == DEFAULT_BASE_URL and settings.cache_dir == str(tmp_path)
    monkeypatch.setenv("TOPAZ_API_URL", "http://127.0.0.1:9/image/v1")
    assert Topaz().base_url == "http://127.0.0.1:9/image/v1"


def test_config_object_sets_traits():
    config = Config()
    config.Topaz.preview_size = 1024
    config.Topaz.mode = "toggle"
    settings = Topaz(config=config)
    assert settings.preview_size == 1024 and settings.mode == "toggle"


def test_preview_size_is_bounded():
    with pytest.raises(TraitError, match="between 64 and 8192"):
        Topaz(preview_size=10)


def test_mode_is_an_enum_of_the_modes():
    from topaz_nb.view.modes import MODES

    assert tuple(Topaz.class_traits()["mode"].values) == MODES
    assert Topaz(mode="Side-By-Side").mode == "side-by-side"
    with pytest.raises(TraitError) as bad:
        Topaz(mode="bogus")
    text = str(bad.value)
    assert "\n" not in text and "Topaz.mode cannot be 'bogus'" in text and "toggle" in text
