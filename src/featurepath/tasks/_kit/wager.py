"""What the wager games share as a :class:`~featurepath.tasks.base.Task`: everything but their
rules' outcome tables and their words (title, history line, menu, chat forms, reminder).

Contexts are the slot machine's: ``safe`` = fixed-bet games that are ahead, ``risky`` =
variable-bet games that are behind after a loss; discover compares games that went bankrupt
with games that stopped.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from featurepath.errors import ConfigError
from featurepath.tasks._kit.constrained import MenuAnswer, cached_constraints
from featurepath.tasks._kit.parser import Menu, parse_menu
from featurepath.tasks._kit.prompts import money
from featurepath.tasks._kit.rules import Round, WagerRules, WagerState
from featurepath.tasks.base import Decision, GameSplit, Prompt, Task, with_reminder

#: Columns every wager game adds to play's decision rows.
DECISION_COLUMNS = {"balance_before": "float64", "history": "object", "outcome": "object",
                    "balance_after": "float64"}
SPLIT = GameSplit(a=("bankrupt",), b=("stop",), label_a="bankrupt", label_b="voluntary stop")
_GAME_KEYS = ["condition", "bet_type", "game_id"]


class WagerTask(Task):
    """A menu game with a bet cap; subclasses set the class attributes and the words."""

    menu_words: ClassVar[Menu]
    builtin_histories: ClassVar[dict[str, tuple[str, list[tuple[str, float, str]]]]]
    builtin_components: ClassVar[str] = ""
    split = SPLIT
    decision_columns = DECISION_COLUMNS

    # ------------------------------------------------------------------ words (per game)
    def history_line(self, r: Round) -> str:
        raise NotImplementedError

    def info_lines(self, state: WagerState, components: str) -> list[str]:
        return []

    def menu(self, state: WagerState) -> list[str]:
        raise NotImplementedError

    def chat_forms(self, bet_type: str) -> str:
        """The final-decision line(s) the chat protocol asks for."""
        raise NotImplementedError

    def completion_reminder(self, prompt: Prompt) -> str:
        raise NotImplementedError

    def reminder(self, prompt: Prompt) -> str:
        """The format reminder of a retry (play resamples unreadable answers with it)."""
        if prompt.protocol == "chat":
            return ("Your previous answer could not be read. End your answer with one line in "
                    "exactly this form: " + self.chat_forms(prompt.bet_type))
        return self.completion_reminder(prompt)

    # ------------------------------------------------------------------ rules and prompts
    def new_game(self, config: WagerRules | None, bet_type: str,
                 seed: int | None) -> WagerState:
        return WagerState(rules=config or self.config_class(), bet_type=bet_type, seed=seed)

    def build_prompt(self, state: WagerState, components: str = "",
                     protocol: str = "completion") -> Prompt:
        from featurepath.tasks._kit.prompts import assemble

        comp = "" if self.condition_name(components) == "BASE" else self.condition_name(
            components)
        return assemble(state, comp, protocol, title=self.title_line,
                        component_texts=self.components, history_line=self.history_line,
                        info=self.info_lines(state, comp), menu=self.menu(state),
                        chat_forms=self.chat_forms(state.bet_type))

    @property
    def title_line(self) -> str:
        return self.title.title() + " Game"

    def builtin_state(self, context: str) -> WagerState:
        if context not in self.builtin_histories:
            raise ConfigError(f"unknown built-in prompt {context!r}; choose from "
                              f"{sorted(self.builtin_histories)}")
        bet_type, rounds = self.builtin_histories[context]
        return WagerState.from_history(self.config_class(), bet_type, rounds)

    def builtin_prompt(self, context: str, protocol: str = "completion") -> Prompt:
        return self.build_prompt(self.builtin_state(context), self.builtin_components, protocol)

    def retry_prompt(self, prompt: Prompt) -> Prompt:
        return with_reminder(prompt, self.reminder(prompt))

    def random_play(self, rng: np.random.Generator, bet_type: str, n_rounds: int,
                    rules: WagerRules | None = None) -> WagerState:
        """A game after up to ``n_rounds`` rounds of random legal play (fewer if it ends):
        a random risky option each round; variable stakes the minimum, $10, $20, everything or
        a whole amount between."""
        rules = rules or self.config_class()
        state = WagerState(rules=rules, bet_type=bet_type, seed=int(rng.integers(2**31)))
        for _ in range(n_rounds):
            if state.ended:
                break
            action = str(rng.choice(list(rules.risky_actions)))
            lo, hi = state.bet_range()
            if bet_type == "fixed":
                amount = hi
            else:
                whole = float(rng.integers(int(np.ceil(lo)), int(hi) + 1)) if hi >= 1 else hi
                amount = float(rng.choice([lo, min(10.0, hi), min(20.0, hi), hi, whole]))
            state.step((action, min(max(amount, lo), hi)))
        return state

    def iter_states(self, context: str, seed: int = 0, config: WagerRules | None = None,
                    max_tries: int = 100_000) -> Iterator[WagerState]:
        """Distinct states (distinct histories) of ``context``, lazily, in a fixed order."""
        if context not in self.contexts:
            raise ConfigError(f"unknown context {context!r} for a state population; use "
                              f"{' or '.join(self.contexts)}")
        rng = np.random.default_rng([seed, self.contexts.index(context)])
        bet_type = "fixed" if context == "safe" else "variable"
        rules = config or self.config_class()
        start = rules.initial_balance
        seen: set[tuple] = set()
        for _ in range(max_tries):
            st = self.random_play(rng, bet_type, int(rng.integers(1, 8)), rules)
            if st.ended or not st.history:
                continue
            fits = (st.balance >= start if context == "safe"
                    else st.balance < start and not st.history[-1].win)
            key = tuple((r.action, r.bet, r.outcome) for r in st.history)
            if fits and key not in seen:
                seen.add(key)
                yield st

    def state_population(self, n: int, context: str, seed: int = 0,
                         config: WagerRules | None = None) -> list[WagerState]:
        out = list(itertools.islice(self.iter_states(context, seed, config), n))
        if len(out) < n:
            raise ConfigError(f"could not draw {n} distinct {context} game states; ask for "
                              "fewer")
        return out

    # ------------------------------------------------------------------ answers
    def parse(self, text: str, **kwargs: Any) -> Decision:
        return parse_menu(self.menu_words, text, **kwargs)

    def answer_constraints(self, tokenizer: Any, rows: list[dict[str, Any]],
                           mode: str) -> list | None:
        rules = self.config_class()
        ids = self.option_token_ids(tokenizer) if mode != "free" else {}
        risky = rules.risky_actions
        return cached_constraints(
            rows, mode, lambda key: MenuAnswer(tokenizer, ids, risky, *key),
            (rules.min_bet, float(rules.bet_cap or rules.initial_balance)))

    # ------------------------------------------------------------------ results
    def before_fields(self, state: WagerState) -> dict[str, Any]:
        return {"balance_before": state.balance, "history": state.history_json()}

    def after_fields(self, state: WagerState, played: Round | None) -> dict[str, Any]:
        if played is None:
            return {"outcome": None, "balance_after": state.balance}
        return {"outcome": played.outcome, "balance_after": played.balance}

    def summarize(self, decisions: Any, config: WagerRules | None = None) -> Any:
        """Per (condition, bet_type): games, bankruptcy / exit / round-limit / invalid-end
        rates, mean rounds, mean stake (of played rounds), mean net, invalid share of decision
        points, and the share of each action among valid decisions. Reads the task-neutral
        columns ``game_id, condition, bet_type, round, action, amount, valid, outcome,
        balance_before, balance_after, end_reason``."""
        import pandas as pd

        initial = (config or self.config_class()).initial_balance
        df = decisions.sort_values("round", kind="stable")
        rows = []
        for (cond, bt), g in df.groupby(["condition", "bet_type"], sort=True):
            games = g.groupby("game_id", sort=True)
            ends = games["end_reason"].last()
            last = games.tail(1).set_index("game_id")
            final = last["balance_after"].fillna(last["balance_before"])
            played = g[g["outcome"].notna() & g["valid"].astype(bool)]
            valid = g[g["valid"].astype(bool) & g["action"].notna()]
            row = dict(condition=cond, bet_type=bt, n_games=int(len(ends)),
                       bankruptcy_rate=float((ends == "bankrupt").mean()),
                       stop_rate=float((ends == "stop").mean()),
                       round_limit_rate=float((ends == "round_limit").mean()),
                       mean_rounds=float(played.groupby("game_id").size().reindex(
                           ends.index, fill_value=0).mean()),
                       mean_bet=float(played["amount"].mean()) if len(played) else np.nan,
                       mean_net=float((final - initial).mean()),
                       invalid_rate=float((~g["valid"].astype(bool)).mean()))
            for action in self.actions:
                row[f"share_{action}"] = (float((valid["action"] == action).mean())
                                          if len(valid) else np.nan)
            rows.append(row)
        return pd.DataFrame(rows, columns=list(self.summary_columns))

    # ------------------------------------------------------------------ SAE corpus
    def _corpus_state(self, rng: random.Random, bet_type: str) -> WagerState:
        """A game after 0-9 rounds of random play; an ended game is mostly redrawn."""
        state = self.random_play(np.random.default_rng(rng.randrange(2**31)), bet_type,
                                 rng.choice([0, 1, 2, 3, 3, 4, 5, 6, 7, 9]))
        if state.ended:
            return self._corpus_state(rng, bet_type) if rng.random() < 0.9 else state
        return state

    def corpus_prompts(self, tok: Any, n_prompts: int, seed: int = 0) -> list[str]:
        from featurepath.tasks._kit.corpus import task_prompts

        return task_prompts(self, tok, n_prompts, seed, self._corpus_state)

    def corpus(self, model: Any, tok: Any, n_prompts: int = 192, gen_tokens: int = 48,
               seed: int = 0, answered_fraction: float = 1.0,
               progress: bool = True) -> list[str]:
        from featurepath.tasks._kit.corpus import assemble_corpus

        return assemble_corpus(model, tok, self.corpus_prompts(tok, n_prompts, seed),
                               gen_tokens, seed, answered_fraction, progress)


def summary_columns(actions: tuple[str, ...]) -> tuple[str, ...]:
    return ("condition", "bet_type", "n_games", "bankruptcy_rate", "stop_rate",
            "round_limit_rate", "mean_rounds", "mean_bet", "mean_net", "invalid_rate",
            *(f"share_{a}" for a in actions))


def stake_words(state: WagerState) -> tuple[str, str]:
    """(the stake as the menu says it, the answer form of a risky option in chat)."""
    lo, hi = state.bet_range()
    if state.bet_type == "fixed":
        return money(hi), ""
    return f"{money(lo)}-{money(hi)}", ", $X"


def demo_presets(quick_conditions: list[str], full_conditions: list[str],
                 components: str, bet_cap: int = 30) -> dict[str, dict[str, Any]]:
    """The embedded model's demo presets of a wager game, shaped like the slot machine's
    (``featurepath.embedded``): constrained answers at temperature 1 (the 135M model seldom
    writes a readable free answer), fixed stakes of the whole balance in ``quick``, an ablation and an
    amplification beside the standard patch conditions, null arms on the amplification."""
    sampling = {"max_new_tokens": 8, "answer": "constrained", "temperature": 1.0}
    patch = {"components": components, "null_conditions": ["risky_amplified"],
             "extra_conditions": [
                 {"name": "safe_ablated", "context": "safe", "patch": "scale", "scale": 0.0},
                 {"name": "risky_amplified", "context": "risky", "patch": "scale",
                  "scale": 3.0}]}
    return {
        # quick: fixed stakes of the whole starting balance, so one loss ends a game; the
        # embedded model exits at once in most games (about 70% of its decisions), and with
        # $100 and $30 stakes 64 games gave no ruined game for discover to compare
        "quick": {"play": {"conditions": quick_conditions, "bet_types": ["fixed"],
                           "games_per_condition": 16, "max_rounds": 10, "batch_size": 32,
                           "sampling": sampling},
                  "rules": {"bet_cap": bet_cap, "initial_balance": float(bet_cap)},
                  "patch": patch},
        "full": {"play": {"conditions": full_conditions, "bet_types": ["fixed", "variable"],
                          "games_per_condition": 32, "max_rounds": 20, "batch_size": 32,
                          "sampling": sampling},
                 "rules": {"bet_cap": bet_cap}, "patch": patch},
    }
