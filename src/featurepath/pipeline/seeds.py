"""Stable seeds: a trial's randomness depends only on what the trial *is*.

``hash()`` is salted per process, so seeds come from BLAKE2b over the parts instead; the same
(run seed, feature, condition, trial) gives the same seed on any worker, shard or resume.
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    blob = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little") >> 1
