"""One settings object: defaults, SLATEWISE_* environment, then CLI flags."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from slatewise.config import load_settings


def test_defaults_match_the_documented_ports():
    s = load_settings([])
    assert (s.grpc_port, s.metrics_port, s.retrieval_top_n) == (50051, 9464, 50)
    assert s.model_enabled


def test_environment_then_flags(monkeypatch):
    monkeypatch.setenv("SLATEWISE_GRPC_PORT", "6000")
    monkeypatch.setenv("SLATEWISE_RETRIEVAL_TOP_N", "20")
    s = load_settings(["--grpc-port", "7000", "--diversify-method", "mmr", "--model", ""])
    assert s.grpc_port == 7000
    assert s.retrieval_top_n == 20
    assert s.diversify_method == "mmr"
    assert not s.model_enabled


def test_invalid_values_are_rejected(monkeypatch):
    monkeypatch.setenv("SLATEWISE_GRPC_PORT", "70000")
    with pytest.raises(ValidationError):
        load_settings([])
