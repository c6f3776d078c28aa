"""Behavioural tasks a model is studied on; ``slot_machine`` is the built-in one."""
