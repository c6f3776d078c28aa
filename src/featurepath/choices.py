"""Every closed list of choices a run's config, the command line and the engine share, spelled
once.

Before, ``positions`` (last / prompt / all) or ``method`` (delta / reconstruct) were written in
config.py's ``Literal`` types, cli/options.py's Enums and engine/hooks.py's checks, and a new
value had to be added in three places that nothing tied together. Now config.py builds its
``Literal`` types from these tuples (``Literal[POSITIONS]``), the CLI builds its Enums from them
(:func:`featurepath.cli.options` ``choice_enum``) and the engine validates against them. This
module imports nothing, so every layer may use it.
"""

from __future__ import annotations

#: patch.mode: generate answers, or teacher-force a fixed one (exact, no sampling)
MODES = ("sample", "replay")
#: patch.method: add the clamp's difference along W_dec (keeping the SAE error), or replace the
#: stream by the SAE reconstruction (the original study's)
METHODS = ("delta", "reconstruct")
#: patch.positions: where a clamp writes (engine.hooks reads their indices)
POSITIONS = ("last", "prompt", "all")
#: patch.prompt_set: where patch and screen take their prompts
PROMPT_SETS = ("builtin", "play", "states")
#: play.protocol / patch.protocol: plain completion ("Choice: ") or the chat template
PROTOCOLS = ("completion", "chat")
#: patch backends
BACKENDS = ("local", "ray")

__all__ = ["MODES", "METHODS", "POSITIONS", "PROMPT_SETS", "PROTOCOLS", "BACKENDS"]
