"""Pricing tests never see a data file that `tokenops prices update` installed for the person running them: the
home folder (where the catalog looks for it, ~/.tokenops/prices) is an empty one of the test's own."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _own_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    return home
