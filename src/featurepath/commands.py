"""Sub-commands of ``featurepath``, registered on :data:`featurepath.cli.app` in pipeline order
(``--help`` lists them in this order): each stage module registers its own commands when
imported."""

from __future__ import annotations

import importlib

STAGE_COMMANDS = (
    "featurepath.pipeline.play_commands",
    "featurepath.pipeline.commands",
    "featurepath.pipeline.status_commands",
    "featurepath.pipeline.estimate_commands",
    "featurepath.analysis.commands",
    "featurepath.report.commands",
    "featurepath.pipeline.demo",
    "featurepath.sae.commands",
)

for _name in STAGE_COMMANDS:
    importlib.import_module(_name)
