"""The investment-choice game of the study's 2026 revision (Lee et al., alternative paradigms):
each round invest and pick one of four options; option 1 is the safe exit, options 2-4 are
bets with the same expected value 0.9 and rising variance. ``task.py`` registers it."""
