"""A tiny random LLaMA and a tiny tokenizer, built offline, for fast tests and benchmarks.

Unit tests must not need the 135M embedded model; this builds a 4-layer LLaMA with d_model 64 and
a character-level tokenizer (every printable ASCII character is a token, so digits tokenise one
per character like LLaMA-3's), plus a chat template so the chat protocol works too.
"""

from __future__ import annotations

import string
from typing import Any

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>",
                "<|end|>"]
    chars = [c for c in string.printable if c not in "\x0b\x0c"]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>",
                                  additional_special_tokens=specials[4:])
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def tiny_llama(n_layers: int = 4, d_model: int = 64, seed: int = 0, vocab_size: int | None = None):
    """``(model, tokenizer)``: a random LLaMA small enough to run hundreds of forwards a second."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=vocab_size or len(tok), hidden_size=d_model,
                      intermediate_size=2 * d_model, num_hidden_layers=n_layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.eval()
    model.requires_grad_(False)
    return model, tok


def save_tiny_llama(path, **kwargs) -> str:
    """Write the tiny model and tokenizer as a Hugging Face directory (for CLI and Ray tests)."""
    model, tok = tiny_llama(**kwargs)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)


def random_sae(d_model: int, d_sae: int, layer: int, activation: str = "jumprelu",
               seed: int = 0, k: int | None = None):
    """A random SAE whose features fire on a fair share of inputs (for engine tests)."""
    import torch

    from featurepath.sae.activations import get_activation
    from featurepath.sae.model import SAE

    g = torch.Generator().manual_seed(seed + 1000 * layer)
    W_dec = torch.randn(d_sae, d_model, generator=g)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    # Residuals of a random tiny LLaMA are small (norm ~0.2-1), so the encoder is scaled up to
    # make about half the features fire on any token.
    W_enc = 10.0 * (W_dec.T.clone() + 0.1 * torch.randn(d_model, d_sae, generator=g))
    b_enc = torch.zeros(d_sae)
    thr = torch.full((d_sae,), 1e-3)
    return SAE(W_enc, b_enc, W_dec, torch.zeros(d_model), activation, thr,
               k if get_activation(activation).uses_k else None, False, layer)


def tiny_saes(model, d_sae: int = 128, activation: str = "jumprelu") -> dict:
    """One random SAE per decoder block of a tiny model."""
    n, d = model.config.num_hidden_layers, model.config.hidden_size
    return {layer: random_sae(d, d_sae, layer, activation, k=16) for layer in range(n)}


def write_tiny_inputs(root) -> tuple[str, str]:
    """A tiny model directory and a directory of its SAEs (one per layer), as a user would have
    them on disk: ``(model_dir, sae_dir)`` for CLI, subprocess and Ray tests."""
    from pathlib import Path

    from featurepath.sae.formats import save_sae

    root = Path(root)
    save_tiny_llama(root / "model")
    model, _ = tiny_llama()
    for layer, sae in tiny_saes(model).items():
        save_sae(sae, root / "saes" / f"L{layer}")
    return str(root / "model"), str(root / "saes")


def write_play_decisions(run, n: int = 6, task: str | None = None):
    """A minimal ``RUN/play/decisions.parquet``: ``n`` first-try decisions alternating the
    task's first continuing action and its exit (default task: the config's) on distinct
    prompts — what the behavioural direction needs, without playing games."""
    from pathlib import Path

    import pandas as pd

    from featurepath.config import DEFAULT_TASK
    from featurepath.tasks import get_task

    t = get_task(task or DEFAULT_TASK)
    go = next(a for a in t.actions if a != t.exit_action)

    path = Path(run) / "play" / "decisions.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"prompt": [f"Round {i}: you have ${100 + 10 * i}. Bet or stop?"
                             for i in range(n)],
                  "action": [go, t.exit_action] * (n // 2) + [go] * (n % 2), "retries": 0,
                  "game_id": [f"g{i}" for i in range(n)], "round": 1}).to_parquet(path)
    return path


def installed_cli() -> list[str]:
    """The command line of the installed ``featurepath`` executable beside this Python (what a
    user runs), or ``python -m featurepath`` where it is not installed: for subprocess tests."""
    import os
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("featurepath")
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", "featurepath"]


def assert_same_store(a, b) -> None:
    """Assert that two run directories hold identical patch stores: the trials table and every
    activation array, NaN for NaN (how tests prove that a killed, resumed, sharded or
    Ray-run store equals an uninterrupted one)."""
    import numpy as np
    import pandas as pd

    from featurepath.pipeline.store import RunStore
    from featurepath.rundir import SIGNALS

    sa, sb = RunStore(a), RunStore(b)
    pd.testing.assert_frame_equal(sa.trials(), sb.trials())
    for name in SIGNALS:
        assert np.array_equal(sa.activations(name)[0], sb.activations(name)[0], equal_nan=True)
