"""featurepath: which SAE features cause a behaviour, how they drive each other, and which words
they put into a model's output."""

from __future__ import annotations

__version__ = "0.1.0"

from featurepath.errors import FeaturepathError  # noqa: E402


def load_model(spec: str = "embedded", device: str | None = None, dtype: str | None = None):
    """Load ``(model, tokenizer)``; see :func:`featurepath.models.load_model`."""
    from featurepath.models import load_model as _load

    return _load(spec, device=device, dtype=dtype)


__all__ = ["FeaturepathError", "load_model", "__version__"]
