"""One quick question to the Hugging Face hub before a model download starts.

Why: ``from_pretrained`` retries an unreachable or unknown hub id with exponential back-off
(about 50 s before it gives up), and its final message does not say what was tried. A model id
that is not in the local cache is first looked up here with a single request and a short
timeout, so a typo or a machine without network fails in seconds, with one line that names the
cache that was searched and the address that was asked.
"""

from __future__ import annotations

import os

from featurepath.errors import ModelLoadError

#: Seconds the single look-up may take (``FEATUREPATH_HUB_TIMEOUT`` overrides it).
DEFAULT_TIMEOUT_S = 10.0


def hub_timeout() -> float:
    try:
        return max(0.1, float(os.environ.get("FEATUREPATH_HUB_TIMEOUT", DEFAULT_TIMEOUT_S)))
    except ValueError:
        return DEFAULT_TIMEOUT_S


def hub_endpoint() -> str:
    """The hub address ``from_pretrained`` would use (``HF_ENDPOINT`` read now, not at import)."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


def probe_hub_model(repo_id: str, timeout: float | None = None) -> None:
    """Return if ``repo_id`` exists on the hub and is readable; else raise one clear line.

    One GET of the model's API record, no retries: the download that follows keeps
    huggingface_hub's own retries for transient errors on a hub that did answer.
    """
    import socket
    import urllib.error
    import urllib.request

    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers

    timeout = hub_timeout() if timeout is None else timeout
    url = f"{hub_endpoint()}/api/models/{repo_id}"
    tried = f"not in the local cache ({constants.HF_HUB_CACHE}), then asked {hub_endpoint()}"
    # the standard library: the HTTP client huggingface_hub uses has changed between releases
    request = urllib.request.Request(url, headers=build_hf_headers())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        why = getattr(exc, "reason", exc)
        if isinstance(why, (TimeoutError, socket.timeout)):
            raise ModelLoadError(f"model {repo_id!r}: {tried}, which did not answer within "
                                 f"{timeout:g} s; check the network, or use a local model "
                                 "directory (HF_HUB_OFFLINE=1 skips the hub)") from None
        reason = str(why).strip().splitlines()[0] if str(why).strip() else type(why).__name__
        raise ModelLoadError(f"model {repo_id!r}: {tried}, which could not be reached ({reason}); "
                             "use a local model directory or a cached id") from None
    if status in (401, 403, 404):
        raise ModelLoadError(f"model {repo_id!r}: {tried}, which has no such model (HTTP "
                             f"{status}; a private or gated model needs `hf auth "
                             "login` and accepted terms) — check the spelling")
    if status >= 400:
        raise ModelLoadError(f"model {repo_id!r}: {tried}, which answered HTTP "
                             f"{status}; try again later or use a local directory")
