"""Sub-commands of ``featurepath``, registered on :data:`featurepath.cli.app`."""

from __future__ import annotations

from featurepath.cli import app  # noqa: F401

# Each stage module registers its own commands when imported.
import featurepath.sae.commands  # noqa: E402,F401
