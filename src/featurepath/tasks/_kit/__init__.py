"""Shared pieces of the built-in wager games (investment choice, mystery wheel) and of the slot
machine: rules with a bet cap, prompt assembly, a strict option parser, constrained answers,
state populations, metrics and the SAE corpus. Not a task itself (the registry skips folders
starting with ``_``)."""
