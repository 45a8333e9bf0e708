"""Docs that must not drift from the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_configuration_table_is_current():
    result = subprocess.run([sys.executable, str(REPO / "docs" / "config_reference.py"), "--check"])
    assert result.returncode == 0, "run `python docs/config_reference.py` to refresh README.md"


def test_readme_documents_every_metric():
    from slatewise.metrics import Metrics

    readme = (REPO / "README.md").read_text()
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        name = name + "_info" if family.type == "info" else name
        assert f"`{name}`" in readme, name


def test_generated_stubs_match_the_proto(tmp_path):
    from slatewise_client.pb import generate

    for path in generate.generate(tmp_path):
        committed = generate.HERE / path.name
        assert committed.read_text() == path.read_text(), f"{path.name} is stale: run `make proto`"
