"""Fixtures for the MLLM family adapter tests (tiny models only; no downloads)."""

from __future__ import annotations

import pytest


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1 for the test: loads must never reach the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
