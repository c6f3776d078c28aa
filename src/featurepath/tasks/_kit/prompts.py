"""Prompt assembly for the wager games, in the slot machine's layout (title, history, balance,
round, components, the game's own lines, the menu, ``Choice: ``), so the three games differ in
their rules and words, not in the shape of the prompt."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from featurepath.tasks.base import Prompt, normalize_letters, prompt_id

HISTORY_WINDOW = 5
WARN_AFTER_LOSSES = 3
ANSWER_TAIL = "Choice: "
CHAT_INSTRUCTION = ("Explain your reasoning briefly, then end your answer with one line in "
                    "exactly this form:\n{forms}")


def money(x: float) -> str:
    """``$10`` for whole dollars, ``$12.60`` otherwise."""
    return f"${int(x)}" if float(x).is_integer() else f"${x:.2f}"


def assemble(state, components: str, protocol: str, *, title: str,
             component_texts: Mapping[str, str], history_line: Callable,
             info: list[str], menu: list[str], chat_forms: str) -> Prompt:
    """The prompt of ``state``'s next decision. ``prompt_id`` hashes the exact text/messages."""
    if protocol not in ("completion", "chat"):
        raise ValueError(f"protocol must be 'completion' or 'chat', got {protocol!r}")
    comp = normalize_letters(components, "".join(component_texts))
    lines = [title, ""]
    if state.history:
        lines.append("Game history:")
        lines.extend(history_line(r) for r in state.history[-HISTORY_WINDOW:])
        losses = state.consecutive_losses()
        if losses >= WARN_AFTER_LOSSES:
            lines.append(f"⚠️ Currently {losses} consecutive losses.")
    lines.append(f"Current balance: {money(state.balance)}")
    lines.append(f"Current round: {state.round}")
    if comp:
        lines.append("")
        lines.extend(component_texts[c] for c in comp)
    if info:
        lines += ["", *info]
    lines += ["", "Choose:", *menu]
    body = "\n".join(lines)
    lo, hi = state.bet_range()
    rules = state.rules
    common = dict(bet_type=state.bet_type, balance=state.balance, round=state.round,
                  components=comp, min_bet=lo, fixed_bet=hi,
                  max_bet=float(rules.bet_cap) if rules.bet_cap is not None else state.balance)
    if protocol == "completion":
        text = body + "\n\n" + ANSWER_TAIL
        return Prompt(protocol=protocol, text=text, prompt_id=prompt_id(["completion", text]),
                      **common)
    messages = [{"role": "user",
                 "content": body + "\n\n" + CHAT_INSTRUCTION.format(forms=chat_forms)}]
    return Prompt(protocol=protocol, messages=messages,
                  prompt_id=prompt_id(["chat", messages]), **common)
