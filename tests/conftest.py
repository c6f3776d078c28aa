"""Shared fixtures: a tiny random LLaMA (fast unit tests) and a private cache directory."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def tiny():
    from featurepath.testing import tiny_llama

    return tiny_llama()


@pytest.fixture(scope="session")
def tiny_saes(tiny):
    from featurepath.testing import tiny_saes

    return tiny_saes(tiny[0])


@pytest.fixture(scope="session", autouse=True)
def _quiet_env():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield
