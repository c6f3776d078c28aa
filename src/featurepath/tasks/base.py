"""The task contract: what a behaviour (a game) must offer so every stage can run on it.

A task is one folder under ``featurepath/tasks/`` whose ``task.py`` builds one :class:`Task`
and calls :func:`featurepath.tasks.register_task` on it. Why one small contract: before it, the
slot machine's words (bet, stop, bankrupt, P(stop), safe/risky) were spelled in play, patch,
discover, controls, causal and the report, so a second game meant editing ~20 files. With it,
a stage asks the task instead (see ``docs/tasks.md`` for which stage calls what).

The contract, in full:

``name``, ``title``
    registry key (the config's ``task:``) and a display name.
``config_class``
    the pydantic model of the task's own config section: the game's rules (initial balance,
    fixed / variable bets, bet range or cap, probabilities and payouts, max rounds).
``new_game(config, bet_type, seed) -> state``
    a game in progress; ``state`` has ``round`` (the round about to be played, 1-based),
    ``balance``, ``ended``, ``end_reason`` (``"stop"``, ``"bankrupt"``, ``"round_limit"``; play
    adds ``"invalid"``), ``history`` (played rounds) and ``step(decision)``, which plays one
    :class:`Decision` (raising ``ValueError`` on an illegal one, never clipping it). Outcomes
    come from ``seed`` alone, so two policies on one seed face the same luck.
``actions``, ``exit_action``, ``option_digits``
    the decisions a parser may return, the one that ends the game on the player's own choice
    (the "exit"), and the digit that names each action in the prompt's menu.
``contexts``, ``builtin_prompt(context, protocol)``, ``iter_states(context, seed)``
    the prompt contexts the task defines (patch conditions run in them) with the study's
    hand-written prompt per context and a lazy, seeded stream of distinct random states per
    context (the first ``n`` are always the same ``n``).
``components``, ``condition_name(components)``
    the optional prompt components (letters) and the canonical condition name of a set.
``build_prompt(state, components, protocol) -> Prompt`` and ``retry_prompt(prompt)``
    the prompt of a state's next decision (``completion`` ending where the answer starts, or
    ``chat``), with ``prompt_id`` a stable hash of its exact text; and the same prompt with a
    reminder of the answer format, for play's resampling of unreadable answers.
``parse(text, **prompt.parse_kwargs()) -> Decision``
    the strict parser: never raises on any string, never turns an unreadable answer into an
    exit; an amount outside the legal range is kept and marked invalid.
``option_token_ids(tokenizer)``, ``readout(tokenizer)``
    the single-token spellings of each option digit, and ``logits -> P(exit)`` at the decision
    token (mass on the exit option over mass on every option), ``None`` without such tokens.
``answer_constraints(tokenizer, parse_kwargs_rows, mode)``
    per-row allowed-token functions that make a small model's answer always parseable
    (``None`` for ``mode="free"``).
``metrics``, ``summarize(decisions, config)``, ``summary_columns``
    the causal tests (:class:`MetricSpec`: name, test kind, practical minimum effect) and the
    per-(condition, bet type) summary of played games.
``split``
    the discover split (:class:`GameSplit`): which ended games are group A and which group B,
    and which context each group's mean activation patches.
``before_fields(state)``, ``after_fields(state, played)``, ``decision_columns``,
``trial_columns``
    the columns the task adds to play's decision rows (before and after a step) and to patch's
    trial rows, with their dtypes.
``corpus(model, tok, ...)``, ``corpus_prompts(tok, n, seed)``
    the SAE-training text: the task's prompts as the model reads them, answers it samples, and
    a few general sentences.
``vocabulary``
    the words only this task uses (its name, its endings, its metric names); no module
    outside ``tasks/`` may spell them.
``demo``
    the embedded model's demo presets (``quick`` / ``full``): the play and patch settings
    ``featurepath demo --task NAME`` uses.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel

from featurepath.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where logits are read, not to list or validate tasks
    import torch

PROTOCOLS: tuple[str, ...] = ("completion", "chat")
BET_TYPES: tuple[str, ...] = ("fixed", "variable")
BASE = "BASE"
_DIGIT_VARIANTS = ("{d}", " {d}", "\n{d}")


@dataclass(frozen=True)
class Decision:
    """A parsed answer. ``amount`` keeps an out-of-range amount so analyses can see what the
    model asked for; ``valid`` says whether the game can play it; ``reason`` says why."""

    action: str | None
    amount: float | None
    valid: bool
    reason: str

    @property
    def bet(self) -> float | None:
        """The slot machine's name for ``amount`` (its rules read ``decision.bet``)."""
        return self.amount


@dataclass(frozen=True)
class Prompt:
    """One decision point's prompt; ``text`` for completion, ``messages`` for chat. The bet
    fields are what the prompt offered, so the parser judges the answer against exactly that."""

    protocol: str
    bet_type: str
    balance: float
    round: int
    components: str
    prompt_id: str
    text: str | None = None
    messages: list[dict[str, str]] | None = None
    min_bet: float = 5.0
    max_bet: float = 100.0
    fixed_bet: float = 10.0
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def condition(self) -> str:
        return self.components or BASE

    def parse_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the task's parser matching what this prompt offered."""
        return dict(bet_type=self.bet_type, protocol=self.protocol, balance=self.balance,
                    min_bet=self.min_bet, max_bet=self.max_bet, fixed_bet=self.fixed_bet)


@dataclass(frozen=True)
class MetricSpec:
    """One causal test per patched group. ``kind`` fixes the test and the column it reads:

    - ``rate``: share of parsed decisions whose action is in ``actions`` (Fisher's exact test);
    - ``invalid``: share of unreadable or unplayable answers over all trials (Fisher);
    - ``amount``: amounts of valid decisions, within prompt (van Elteren);
    - ``readout``: P(exit) at the decision token, paired by distinct prompt (paired t).

    ``toward_b`` is the sign of an effect that moves behaviour toward group B of the split
    (the cautious group: +1 for "exits more", -1 for "bets more", 0 for the invalid rate)."""

    name: str
    kind: Literal["rate", "invalid", "amount", "readout"]
    min_effect: float
    label: str
    toward_b: int
    actions: tuple[str, ...] = ()


@dataclass(frozen=True)
class GameSplit:
    """Discover's two groups of ended games, by ``end_reason``. Group A is the behaviour under
    study (e.g. went bankrupt), group B its opposite (stopped on its own); ``context_a`` /
    ``context_b`` name the patch value each group's mean activation becomes (and, for
    ``prompt_set: play``, the context its decision points fill)."""

    a: tuple[str, ...]
    b: tuple[str, ...]
    label_a: str
    label_b: str
    context_a: str = "risky"
    context_b: str = "safe"

    def group(self, end_reason: str | None) -> str | None:
        """``"a"``, ``"b"`` or ``None`` (a game in neither group, e.g. a round limit)."""
        if end_reason in self.a:
            return "a"
        if end_reason in self.b:
            return "b"
        return None


def prompt_id(payload: Any) -> str:
    """12 hex digits of SHA-256 over the canonical JSON of ``payload`` (the exact text or
    messages): equal states share an id across games and stages, a wording change gives a new
    one."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:12]


def render(prompt: Prompt, tokenizer: Any = None) -> str:
    """Model input text: completion text as is, chat messages through the chat template."""
    if prompt.protocol == "completion":
        assert prompt.text is not None
        return prompt.text
    if tokenizer is None:
        raise ConfigError("rendering a chat prompt needs a tokenizer with a chat template")
    return tokenizer.apply_chat_template(prompt.messages, tokenize=False,
                                         add_generation_prompt=True)


def with_reminder(prompt: Prompt, note: str, tail: str = "Choice: ") -> Prompt:
    """``prompt`` with ``note`` (a reminder of the answer format): before ``tail`` in a
    completion prompt, so the decision token stays the last one, or appended to the last chat
    message."""
    import dataclasses

    if prompt.protocol == "chat":
        msgs = [dict(m) for m in prompt.messages or []]
        msgs[-1]["content"] = msgs[-1]["content"] + "\n\n" + note
        return dataclasses.replace(prompt, messages=msgs)
    text = prompt.text or ""
    head = text[:-len(tail)] if text.endswith(tail) else text + "\n\n"
    return dataclasses.replace(prompt, text=f"{head}{note}\n\n{tail}")


def normalize_letters(components: str, canonical: str) -> str:
    """Canonical letter string (``""`` for the base prompt) from ``"BASE"``, ``""`` or letters
    in any order, so ``"MG"`` and ``"GM"`` name the same condition."""
    c = (components or "").strip().upper()
    if c in ("", BASE):
        return ""
    unknown = sorted(set(c) - set(canonical))
    if unknown:
        raise ConfigError(f"unknown prompt component(s) {''.join(unknown)!r} in {components!r}; "
                          f"use letters from {canonical} or 'BASE'")
    return "".join(ch for ch in canonical if ch in c)


def digit_token_ids(tokenizer: Any, options: Mapping[str, str]) -> dict[str, list[int]]:
    """``{action: [ids]}``: every single-token spelling of each option's digit ("3", " 3",
    "\\n3", and the vocabulary entries "3", "Ġ3", "▁3"). Raises ``ValueError`` when an option has
    none or two options share a token, since P(exit) would silently be wrong."""
    vocab = tokenizer.get_vocab()
    out: dict[str, list[int]] = {}
    for name, digit in options.items():
        ids: set[int] = set()
        for pattern in _DIGIT_VARIANTS:
            enc = tokenizer.encode(pattern.format(d=digit), add_special_tokens=False)
            if len(enc) == 1:
                ids.add(int(enc[0]))
        for spelled in (digit, "Ġ" + digit, "▁" + digit):
            if spelled in vocab:
                ids.add(int(vocab[spelled]))
        if not ids:
            raise ValueError(f"tokenizer has no single token for option {digit!r}")
        out[name] = sorted(ids)
    seen: set[int] = set()
    for ids in out.values():
        if seen & set(ids):
            raise ValueError("two options share a token")
        seen |= set(ids)
    return out


def p_exit_from_logits(logits: torch.Tensor, ids: Mapping[str, list[int]],
                       exit_action: str) -> torch.Tensor:
    """P(exit | the next token is an option) = exit mass / mass on every option, computed as
    ``sigmoid(logsumexp(exit) - logsumexp(other options))`` in float32: the softmax
    normaliser cancels and extreme logits cannot overflow. ``logits`` is ``[..., vocab]``."""
    import torch

    x = logits.float()
    rest = [i for name, v in ids.items() if name != exit_action for i in v]
    ex = torch.logsumexp(x[..., list(ids[exit_action])], dim=-1)
    other = torch.logsumexp(x[..., rest], dim=-1)
    return torch.sigmoid(ex - other)


class Task(ABC):
    """A behaviour featurepath can study; the module docstring is the whole contract."""

    name: ClassVar[str]
    title: ClassVar[str]
    config_class: ClassVar[type[BaseModel]]
    actions: ClassVar[tuple[str, ...]]
    exit_action: ClassVar[str]
    option_digits: ClassVar[dict[str, str]]
    contexts: ClassVar[tuple[str, ...]] = ("safe", "risky")
    #: prompt components of ``patch.prompt_set: states`` when the config names none
    state_components: ClassVar[str] = ""
    components: ClassVar[dict[str, str]]
    split: ClassVar[GameSplit]
    metrics: ClassVar[tuple[MetricSpec, ...]]
    summary_columns: ClassVar[tuple[str, ...]]
    decision_columns: ClassVar[dict[str, str]]
    trial_columns: ClassVar[dict[str, str]] = {}
    demo: ClassVar[dict[str, dict[str, Any]]]
    #: words only this task (or its family) uses: no module outside ``tasks/`` may name them
    #: (``tests/test_architecture.py``), so a stage that needs one must ask the task instead
    vocabulary: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ rules
    def default_config(self) -> BaseModel:
        return self.config_class()

    @abstractmethod
    def new_game(self, config: BaseModel | None, bet_type: str, seed: int | None) -> Any:
        """A fresh game (see the contract for the state's attributes)."""

    # ------------------------------------------------------------------ prompts
    def condition_name(self, components: str) -> str:
        """``"BASE"`` for no components, else the canonical letters; ``ConfigError`` on a
        letter the task does not have."""
        return normalize_letters(components, "".join(self.components)) or BASE

    @abstractmethod
    def build_prompt(self, state: Any, components: str = "",
                     protocol: str = "completion") -> Prompt:
        """The prompt for ``state``'s next decision."""

    @abstractmethod
    def builtin_prompt(self, context: str, protocol: str = "completion") -> Prompt:
        """The task's hand-written prompt of ``context``."""

    @abstractmethod
    def iter_states(self, context: str, seed: int = 0,
                    config: BaseModel | None = None) -> Iterator[Any]:
        """Distinct random states of ``context`` under ``config``'s rules (default: the task's
        defaults), lazily, in a fixed order."""

    @abstractmethod
    def retry_prompt(self, prompt: Prompt) -> Prompt:
        """``prompt`` with a reminder of the answer format (the decision token stays last)."""

    def render(self, prompt: Prompt, tokenizer: Any = None) -> str:
        return render(prompt, tokenizer)

    # ------------------------------------------------------------------ answers
    @abstractmethod
    def parse(self, text: str, **kwargs: Any) -> Decision:
        """Strict parse of one answer; ``kwargs`` are ``prompt.parse_kwargs()``."""

    def option_token_ids(self, tokenizer: Any) -> dict[str, list[int]]:
        return digit_token_ids(tokenizer, self.option_digits)

    def readout(self, tokenizer: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """``logits [rows, vocab] -> P(exit) [rows]``, or ``None`` (then P(exit) is NaN)."""
        try:
            ids = self.option_token_ids(tokenizer)
        except ValueError:
            return None
        return lambda logits: p_exit_from_logits(logits, ids, self.exit_action)

    @abstractmethod
    def answer_constraints(self, tokenizer: Any, rows: list[dict[str, Any]],
                           mode: str) -> list | None:
        """Per-row constraints for ``generate`` (``None`` in free mode)."""

    # ------------------------------------------------------------------ results
    @abstractmethod
    def summarize(self, decisions: Any, config: BaseModel | None = None) -> Any:
        """Per (condition, bet_type) metrics of play's decision table."""

    @abstractmethod
    def before_fields(self, state: Any) -> dict[str, Any]:
        """Task columns of a decision row known before the decision is played."""

    @abstractmethod
    def after_fields(self, state: Any, played: Any) -> dict[str, Any]:
        """Task columns of a decision row after ``state.step`` returned ``played``."""

    def metric(self, name: str) -> MetricSpec:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"task {self.name} has no metric {name!r}")

    # ------------------------------------------------------------------ SAE corpus
    @abstractmethod
    def corpus_prompts(self, tok: Any, n_prompts: int, seed: int = 0) -> list[str]:
        """``n_prompts`` rendered prompts of random states and conditions."""

    def eval_texts(self, tok: Any, n_texts: int = 24, seed: int = 12345) -> list[str]:
        """Held-out text to measure an SAE on: fresh prompts of the task (``seed`` is one the
        training corpus does not use) plus four general sentences."""
        from featurepath.tasks._kit.corpus import GENERAL_TEXTS

        return self.corpus_prompts(tok, max(1, n_texts - 4), seed) + list(GENERAL_TEXTS[:4])

    @abstractmethod
    def corpus(self, model: Any, tok: Any, n_prompts: int = 192, gen_tokens: int = 48,
               seed: int = 0, answered_fraction: float = 1.0,
               progress: bool = True) -> list[str]:
        """The SAE-training texts (deterministic given ``seed`` and the model)."""

    def __repr__(self) -> str:
        return f"<Task {self.name}>"
