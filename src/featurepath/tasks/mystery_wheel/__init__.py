"""The mystery-wheel game of the study's 2026 revision (Lee et al., alternative paradigms):
spin (bet) or stop; the wheel's zones pay 2x, 3x or 8x or lose the bet, with probabilities the
model is never told (expected value 0.9). ``task.py`` registers it."""
