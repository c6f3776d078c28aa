"""Held-out prompts: every prompt population is split by a deterministic hash into a *screen*
half and a *confirm* half.

Why: a candidate chosen on some prompts and confirmed on the same prompts is confirmed by the
noise that chose it (the winner's curse). Discover, the screen and the first patch round see only
the screen half; ``featurepath confirm`` sees only the confirm half. The half of a prompt depends
on its key alone (never on the population it was drawn with), so adding prompts never moves an
old one to the other half, and every run of the same key agrees.

The key is what varies independently: a state prompt's id for ``prompt_set: states``, and the
*game* for ``prompt_set: play`` (decision points of one game are not independent, so a game's
points all go to one half).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Literal, TypeVar

Half = Literal["screen", "confirm"]
HALVES: tuple[Half, Half] = ("screen", "confirm")
_SALT = b"featurepath/prompt-split/v1\0"

T = TypeVar("T")


def split_u(key: str) -> float:
    """A uniform number in [0, 1) from ``key`` (SHA-256, first 8 bytes): the same on every
    machine and Python version (``hash()`` is salted per process, so it is not used)."""
    digest = hashlib.sha256(_SALT + str(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def half_of(key: str, confirm_share: float) -> Half:
    """``"confirm"`` for a share ``confirm_share`` of keys, ``"screen"`` for the rest."""
    if not 0.0 <= confirm_share <= 1.0:
        raise ValueError(f"confirm_share must lie in [0, 1], got {confirm_share}")
    return "confirm" if split_u(key) < confirm_share else "screen"


def take_half(items: Iterable[T], key: Callable[[T], str], half: Half | None,
              confirm_share: float, n: int | None = None) -> list[T]:
    """The items of ``half`` in their order (all items for ``half=None``), at most ``n``.

    ``items`` may be a lazy, endless stream (a state generator): it is read only until ``n``
    items of the half have been found."""
    out: list[T] = []
    for item in items:
        if half is None or half_of(key(item), confirm_share) == half:
            out.append(item)
            if n is not None and len(out) == n:
                break
    return out
