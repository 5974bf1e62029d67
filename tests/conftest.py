"""Shared pytest fixtures. Heavy imports (torch, diffusers) stay inside the fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A $SFGEVAL_CACHE folder holding the tiny SD model (built once per test session)."""
    from sampler.tiny import ensure_tiny_model

    cache = tmp_path_factory.mktemp("sfgeval-cache")
    ensure_tiny_model(cache / "tiny-sd")
    return cache


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_cache):
    """Path of the tiny random-weight SD 1.x model folder (diffusers layout)."""
    return tiny_cache / "tiny-sd"


@pytest.fixture(scope="session")
def tiny_sfg(tiny_model_dir):
    """SFGPipeline over the tiny model, float32 on CPU (shared: tests must leave it as found)."""
    from sampler.pipeline import SFGPipeline

    return SFGPipeline.from_pretrained(tiny_model_dir, device="cpu")
