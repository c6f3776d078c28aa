"""Batched sampling and teacher-forced replay under per-row interventions.

A hand-written decoding loop instead of ``model.generate`` because featurepath needs three things
``generate`` does not give together: a random generator *per row* (a trial's tokens depend only on
its own seed, not on its batch-mates), to know for every forward call which position is the
decision token and which are generated tokens (for the hooks), and to drop finished rows from the
batch (a short answer should not pay for the longest one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from featurepath.engine.hooks import CallState, Intervention, PatchRecorder, RecordSpec
from featurepath.engine.kvcache import reserve
from featurepath.sae.model import SAE


@dataclass
class SamplingConfig:
    """How answers are sampled. ``temperature = 0`` means greedy decoding.

    Runs build this from their config (``SamplingSection.engine()``); these defaults serve
    direct library calls only."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 32
    stop_strings: tuple[str, ...] = ()


#: Reads one number per row from the decision token's logits ``[rows, vocab] -> [rows]`` (the
#: run's task passes P(exit)); the engine itself knows no task.
Readout = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class GenResult:
    """Per row: the answer text and tokens, the task's readout of the decision token's logits
    (NaN without one), and the recorded features at the decision token and over the generated
    tokens (mean and max)."""

    texts: list[str]
    tokens: list[list[int]]
    readout: torch.Tensor
    decision: torch.Tensor
    gen_mean: torch.Tensor
    gen_max: torch.Tensor
    n_new_tokens: list[int] = field(default_factory=list)


def _encode(tok, prompts: Sequence[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    tok.padding_side = "left"
    enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _readout(logits: torch.Tensor, readout: Readout | None) -> torch.Tensor:
    if readout is None:
        return torch.full(logits.shape[:-1], float("nan"))
    return readout(logits.float()).float().cpu()


def _constrain(logits: torch.Tensor, allowed: list[list[int] | None]) -> torch.Tensor:
    """Rows with an allowed list keep only those tokens (renormalised by the softmax)."""
    if all(a is None for a in allowed):
        return logits
    out = logits.clone()
    for i, a in enumerate(allowed):
        if a is not None:
            keep = torch.full_like(out[i], float("-inf"))
            idx = torch.as_tensor(a, device=out.device)
            keep[idx] = out[i, idx]
            out[i] = keep
    return out


def _sample(logits: torch.Tensor, gens: list[torch.Generator], cfg: SamplingConfig) -> torch.Tensor:
    """One token per row, each row drawing from its own generator.

    Inverse-CDF sampling: each row draws one uniform number from its own generator, and one
    batched cumulative sum finds the token — a row's token depends only on its own logits and
    seed, and the whole batch costs one pass instead of one ``multinomial`` call per row (which
    was a fifth of decoding time at batch 32).
    """
    if cfg.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / cfg.temperature, dim=-1)
    if cfg.top_p < 1.0:
        sp, si = probs.sort(dim=-1, descending=True)
        keep = sp.cumsum(-1) - sp < cfg.top_p
        sp = sp * keep
        probs = torch.zeros_like(probs).scatter_(-1, si, sp)
    cdf = probs.cumsum(-1)
    u = torch.cat([torch.rand(1, generator=g) for g in gens]).to(cdf.device)
    target = (u * cdf[:, -1]).unsqueeze(1)
    idx = torch.searchsorted(cdf, target, right=True).squeeze(1)
    # never land on a zero-probability token at the end of the vocabulary; the last non-zero
    # token is the first True of the flipped mask (argmax returns the first maximum), which
    # costs a third of an int64 cumulative sum over the vocabulary at every step
    last_nonzero = (probs.shape[-1] - 1) - (probs > 0).flip(-1).to(torch.uint8).argmax(-1)
    return torch.minimum(idx, last_nonzero)


def _forward(model, ids, mask, pos, cache):
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache,
                use_cache=True, logits_to_keep=1)
    return out.logits[:, -1], _cache_of(out)


def _cache_of(out):
    """The KV cache of a model output, read from the field the output class declares: recent
    transformers call it ``cache`` and answer the old name ``past_key_values`` with a
    deprecation line on stderr, older ones (and remote code) declare ``past_key_values``."""
    fields = getattr(out, "__dataclass_fields__", {})
    for name in ("cache", "past_key_values"):
        if name in fields:
            return getattr(out, name)
    return None


@torch.no_grad()
def generate(model, tok, prompts: Sequence[str], seeds: Sequence[int],
             sampling: SamplingConfig | None = None, saes: dict[int, SAE] | None = None,
             interventions: Sequence[Intervention | None] | None = None,
             record: RecordSpec | None = None,
             readout: Readout | None = None,
             shared_prefix: bool = True, constraints: Sequence[Any] | None = None) -> GenResult:
    """Sample one answer per prompt, row ``i`` patched by ``interventions[i]`` and seeded by
    ``seeds[i]``; the decision token is the last prompt token.

    With ``shared_prefix`` (the default) and no ``all``-position patch, every distinct prompt's
    tokens before the decision token run once, unpatched, and their KV cache is shared by all
    rows with that prompt: a patch at the decision token cannot change earlier positions, and
    trials of one condition mostly share prompts, so the prefill — the dominant cost on CPU —
    is paid per distinct prompt rather than per trial.

    ``constraints[i]``, when given, is an object whose ``allowed(tokens_so_far)`` lists the
    tokens row ``i`` may sample next (e.g. the task's constrained answer format)."""
    cfg = sampling or SamplingConfig()
    n = len(prompts)
    device = next(model.parameters()).device
    ivs = list(interventions) if interventions is not None else [None] * n
    rec = PatchRecorder(model, saes or {}, ivs, record)
    gens = [torch.Generator().manual_seed(int(s) & 0x7FFF_FFFF_FFFF_FFFF) for s in seeds]
    eos = set()
    for e in (tok.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(e, int):
            eos.add(e)
        elif isinstance(e, (list, tuple)):
            eos.update(int(x) for x in e)
    out_tokens: list[list[int]] = [[] for _ in range(n)]
    rows = torch.arange(n)
    read = torch.full((n,), float("nan"))
    with rec:
        if shared_prefix and all(iv is None or iv.positions != "all" for iv in ivs):
            logits, cache, mask = _prefill_shared(model, tok, prompts, rec, device,
                                                  room=cfg.max_new_tokens + 1)
        else:
            ids, mask = _encode(tok, prompts, device)
            T = ids.shape[1]
            rec.state = CallState(rows, torch.full((n,), T - 1, device=device),
                                  torch.zeros(n, T, dtype=torch.bool, device=device),
                                  mask.bool(), prefill=True, has_decision=True, has_gen=False)
            logits, cache = _forward(model, ids, mask, _positions(mask), None)
        # decoding writes into reserved room instead of re-concatenating the cache each step
        reserve(cache, cfg.max_new_tokens)
        read[:] = _readout(logits, readout)
        step_state = None
        for _step in range(cfg.max_new_tokens):
            if constraints is not None:
                logits = _constrain(logits, [None if constraints[int(r)] is None else
                                             constraints[int(r)].allowed(out_tokens[int(r)])
                                             for r in rows])
            nxt = _sample(logits, [gens[int(r)] for r in rows], cfg)
            keep = []
            # the one host sync of a decoding step: which rows ended (EOS, stop string, budget)
            for i, (r, t) in enumerate(zip(rows.tolist(), nxt.tolist(), strict=True)):
                if t in eos:
                    continue
                out_tokens[r].append(t)
                if cfg.stop_strings:
                    tail = tok.decode(out_tokens[r][-8:])
                    if any(s in tail for s in cfg.stop_strings):
                        continue
                if len(out_tokens[r]) < cfg.max_new_tokens:
                    keep.append(i)
            if not keep:
                break
            if len(keep) < len(rows):
                k = torch.tensor(keep, device=device)
                cache.batch_select_indices(k)
                mask = mask[k]
                nxt = nxt[k]
                rows = rows[torch.tensor(keep)]
                step_state = None
            mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=mask.dtype, device=device)], 1)
            pos = (mask.long().sum(-1, keepdim=True) - 1)
            if step_state is None:
                # one decode state per set of live rows: the recorder plans it once and
                # reuses it, on the device, for every step until a row finishes
                b = len(rows)
                step_state = CallState(rows, torch.full((b,), -1, device=device),
                                       torch.ones(b, 1, dtype=torch.bool, device=device),
                                       torch.ones(b, 1, dtype=torch.bool, device=device),
                                       prefill=False, has_decision=False, has_gen=True)
            rec.state = step_state
            logits, cache = _forward(model, nxt.view(-1, 1), mask, pos, cache)
            rec.count_generated()
        rec.state = None
    texts = [tok.decode(t, skip_special_tokens=True) for t in out_tokens]
    if cfg.stop_strings:
        texts = [_cut(t, cfg.stop_strings) for t in texts]
    return GenResult(texts, out_tokens, read, rec.decision, rec.gen_mean(), rec.gen_max,
                     [len(t) for t in out_tokens])


def _prefill_shared(model, tok, prompts: Sequence[str], rec: PatchRecorder, device,
                    room: int = 0):
    """Prefill distinct prompts once (hooks idle: nothing is patched or recorded before the
    decision token), copy their caches to the rows, then run every row's decision token with
    the hooks live. ``room`` positions are reserved in the rows' cache for what follows."""
    n = len(prompts)
    uniq = list(dict.fromkeys(prompts))
    index = torch.tensor([uniq.index(p) for p in prompts], device=device)
    u_ids, u_mask = _encode(tok, uniq, device)
    cache = None
    if u_ids.shape[1] > 1:
        rec.state = None
        _, cache = _forward(model, u_ids[:, :-1], u_mask[:, :-1], _positions(u_mask[:, :-1]),
                            None)
        reserve(cache, room)
        cache.batch_select_indices(index)
    mask = u_mask[index]
    pos = mask.long().sum(-1, keepdim=True) - 1
    rec.state = CallState(torch.arange(n), torch.zeros(n, dtype=torch.long, device=device),
                          torch.zeros(n, 1, dtype=torch.bool, device=device),
                          torch.ones(n, 1, dtype=torch.bool, device=device), prefill=True,
                          has_decision=True, has_gen=False)
    logits, cache = _forward(model, u_ids[index][:, -1:], mask, pos, cache)
    return logits, cache, mask


def _cut(text: str, stops: tuple[str, ...]) -> str:
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return text if cut < 0 else text[:cut]


@torch.no_grad()
def replay(model, tok, prompts: Sequence[str], responses: Sequence[str] | None = None,
           saes: dict[int, SAE] | None = None,
           interventions: Sequence[Intervention | None] | None = None,
           record: RecordSpec | None = None,
           readout: Readout | None = None) -> GenResult:
    """Teacher-forced: one forward pass over each prompt (plus its fixed response, if given)
    with the patch; exact and much cheaper than sampling. Response tokens count as generated
    tokens for recording and for ``last`` positions."""
    n = len(prompts)
    device = next(model.parameters()).device
    ivs = list(interventions) if interventions is not None else [None] * n
    rec = PatchRecorder(model, saes or {}, ivs, record)
    p_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    r_ids = [tok(r, add_special_tokens=False)["input_ids"] if r else [] for r in
             (responses or [""] * n)]
    lens = [len(a) + len(b) for a, b in zip(p_ids, r_ids, strict=True)]
    T = max(lens)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((n, T), pad, dtype=torch.long)
    mask = torch.zeros(n, T, dtype=torch.long)
    dec = torch.zeros(n, dtype=torch.long)
    gen = torch.zeros(n, T, dtype=torch.bool)
    for i, (a, b) in enumerate(zip(p_ids, r_ids, strict=True)):
        off = T - lens[i]
        ids[i, off:] = torch.tensor(a + b, dtype=torch.long)
        mask[i, off:] = 1
        dec[i] = off + len(a) - 1
        gen[i, off + len(a):] = True
    ids, mask = ids.to(device), mask.to(device)
    with rec:
        rec.state = CallState(torch.arange(n), dec, gen, mask.bool(), prefill=True)
        out = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask),
                    use_cache=False)
        rec.count_generated()
        rec.state = None
    dec_logits = out.logits[torch.arange(n, device=device), dec.to(device)]
    return GenResult(list(responses or [""] * n), [b for b in r_ids],
                     _readout(dec_logits, readout), rec.decision, rec.gen_mean(),
                     rec.gen_max, [len(b) for b in r_ids])
