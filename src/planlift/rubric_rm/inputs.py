"""The RM's input text and its tokenization, as the authors render it, but truncated from the problem.

    <task>{task_name}</task>
    <type>{task_type}</type>
    <problem>
    {problem}
    </problem>
    <tests>            (code tasks with tests only)
    {tests}
    </tests>
    <reasoning>
    {reasoning}
    </reasoning>

`task_name` is the task family the RM was trained on ("math" / "code"; the authors' client sends
"math" for GSM8K) and `task_type` the group's task_type. The authors truncate the token sequence from the
right, which cuts the reasoning (the thing being judged) and the closing tag the score is pooled at.
Here an input over `max_length` loses the tail of its problem first (marked " [...]"), then its tests;
only a reasoning that alone exceeds the budget loses its beginning (its end holds the conclusion).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

CUT_MARK = " [...]"


def render_rm_text(
    problem: str, reasoning: str, task_name: str, task_type: str, tests: str | None = None
) -> str:
    parts = [
        f"<task>{task_name}</task>",
        f"<type>{task_type}</type>",
        "<problem>",
        problem.strip(),
        "</problem>",
    ]
    if tests:
        parts += ["<tests>", tests.strip(), "</tests>"]
    parts += ["<reasoning>", reasoning.strip(), "</reasoning>"]
    return "\n".join(parts)


def _ids(tokenizer, text: str, special: bool = True) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def _fit_by_cutting(tokenizer, text: str, render, max_length: int) -> list[int] | None:
    """Ids of `render(prefix of text + cut mark)` for the longest token prefix that fits, or None."""
    ids = _ids(tokenizer, text, special=False)
    mark = len(_ids(tokenizer, CUT_MARK, special=False))
    keep = len(ids) - (len(_ids(tokenizer, render(text))) - max_length) - mark
    while keep > 0:
        encoded = _ids(tokenizer, render(tokenizer.decode(ids[:keep], skip_special_tokens=True) + CUT_MARK))
        if len(encoded) <= max_length:
            return encoded
        keep -= len(encoded) - max_length  # tokens can merge across the cut: shrink by what is still over
    return None


def _frame_head(tokenizer, task_name: str, task_type: str) -> list[int]:
    """The tokens before the reasoning when the problem is cut to its mark: what every input keeps."""
    frame = render_rm_text(CUT_MARK.strip(), "", task_name, task_type)
    return _ids(tokenizer, frame[: frame.rindex("\n</reasoning>")])


def shortest_max_length(tokenizer, task_name: str, task_type: str) -> int:
    """The least `max_length` that leaves room for one token of reasoning after the frame."""
    return len(_frame_head(tokenizer, task_name, task_type)) + 1


def encode_rm_input(
    tokenizer,
    problem: str,
    reasoning: str,
    task_name: str,
    task_type: str,
    max_length: int,
    tests: str | None = None,
) -> list[int]:
    """Token ids of the rendered input, at most `max_length`, with the reasoning kept whole if it fits.
    Control-token spellings in the problem and reasoning are removed (`strip_control_tokens`)."""
    from planlift.generation import strip_control_tokens

    problem, reasoning = (strip_control_tokens(text, tokenizer) for text in (problem, reasoning))
    ids = _ids(tokenizer, render_rm_text(problem, reasoning, task_name, task_type, tests))
    if len(ids) <= max_length:
        return ids
    fitted = _fit_by_cutting(
        tokenizer, problem, lambda p: render_rm_text(p, reasoning, task_name, task_type, tests), max_length
    )
    if fitted is not None:
        return fitted
    problem = CUT_MARK.strip()
    if tests:
        fitted = _fit_by_cutting(
            tokenizer,
            tests,
            lambda t: render_rm_text(problem, reasoning, task_name, task_type, t),
            max_length,
        )
        if fitted is not None:
            return fitted
    # The reasoning alone is over budget: keep the frame's head and the reasoning's tail.
    head = _frame_head(tokenizer, task_name, task_type)
    keep = max_length - len(head)
    if keep <= 0:
        raise ValueError(f"max_length={max_length} is shorter than the input frame ({len(head)} tokens)")
    full = _ids(tokenizer, render_rm_text(problem, reasoning, task_name, task_type))
    return head + full[len(head) :][-keep:]


def what_is_cut(
    tokenizer, problem: str, reasoning: str, task_name: str, task_type: str, max_length: int
) -> str | None:
    """What `encode_rm_input` (no tests) cuts from this input: None (nothing), "problem" (the problem's
    tail) or "reasoning" (its beginning: the reasoning alone is over the budget). Held-out evaluation counts
    these: a cut reasoning may have lost the step it is judged on."""
    from planlift.generation import strip_control_tokens

    problem, reasoning = (strip_control_tokens(text, tokenizer) for text in (problem, reasoning))
    if len(_ids(tokenizer, render_rm_text(problem, reasoning, task_name, task_type))) <= max_length:
        return None
    shortest = render_rm_text(CUT_MARK.strip(), reasoning, task_name, task_type)
    return "problem" if len(_ids(tokenizer, shortest)) <= max_length else "reasoning"


def render_reasoning_only(reasoning: str) -> str:
    """The reasoning alone, without tags, task, problem or tests: the input of the first stage of a
    language-model warm-up of a small backbone (`rm_data.render=reasoning`), never what the RM scores."""
    return reasoning.strip()


def encode_reasoning_only(tokenizer, reasoning: str, max_length: int) -> list[int]:
    """Token ids of `render_reasoning_only`; an over-long one keeps its last `max_length` tokens."""
    return _ids(tokenizer, render_reasoning_only(reasoning))[-max_length:]


def reasoning_token_count(tokenizer, reasoning: str) -> int:
    """How many tokens at the end of an authors' input are the reasoning and its closing tag (a
    reasoning-only rendering is all reasoning: callers clip to its length). Exact for the character
    tokenizer; a BPE merge across the opening tag's newline may shift the boundary by one token."""
    return len(_ids(tokenizer, reasoning.strip() + "\n</reasoning>", special=False))


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask, both [B, T], padded on `side` ("left" or "right")."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, ids in enumerate(sequences):
        span = slice(length - len(ids), length) if side == "left" else slice(0, len(ids))
        input_ids[row, span] = torch.tensor(list(ids), dtype=torch.long)
        mask[row, span] = 1
    return input_ids, mask
