"""Batched generation with Hugging Face models: prompt rendering, left padding, stop strings, masks.

Planner rollouts and the HF executor both go through `generate`: one left-padded `model.generate` per
call, `n` samples per prompt sharing it (rows grouped per prompt: [p0s0, p0s1, ..., p1s0, ...]).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase

from planlift.tasks.base import ChatPrompt

# Spellings of the common chat formats' control tokens (ChatML/Qwen `<|im_end|>`, Llama 3 `<|eot_id|>`,
# `<s>`/`</s>`, `[INST]`, `<<SYS>>`, Gemma `<end_of_turn>`): for text that a tokenizer we do not hold will
# read (an API server's chat template).
CONTROL_TOKEN_TEXT = re.compile(r"<\|[^<>|\s]{1,64}\|>|</?s>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>")


def special_token_strings(tokenizer: PreTrainedTokenizerBase | None) -> list[str]:
    """The strings `tokenizer` turns into its special tokens when they appear in text, longest first."""
    if tokenizer is None:
        return []
    found = set(getattr(tokenizer, "all_special_tokens", []))
    for added in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(added, "special", False):
            found.add(str(added.content))
    return sorted((s for s in found if s), key=len, reverse=True)


def strip_control_tokens(text: str, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """`text` without spellings of control tokens: the tokenizer's special tokens and the common chat
    formats'. Text a policy wrote (a reasoning inside the executor's prompt) could otherwise close the user
    turn and write the assistant's, since tokenizers read these spellings as the real tokens. Removal repeats
    until none is left (removing one can join the halves of another)."""
    specials = special_token_strings(tokenizer)
    while True:
        stripped = CONTROL_TOKEN_TEXT.sub("", text)
        for special in specials:
            stripped = stripped.replace(special, "")
        if stripped == text:
            return text
        text = stripped


def render_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: ChatPrompt, use_chat_template: bool | None
) -> str:
    """Chat template when the tokenizer has one (or when forced), else `system\\nuser`; then the prefill.
    Control-token spellings in the system and user text are removed first (`strip_control_tokens`): only
    the template writes control tokens."""
    system = strip_control_tokens(prompt.system, tokenizer) if prompt.system else prompt.system
    user = strip_control_tokens(prompt.user, tokenizer)
    if use_chat_template is None:
        use_chat_template = getattr(tokenizer, "chat_template", None) is not None
    if use_chat_template:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = f"{system}\n{user}" if system else user
    return text + prompt.prefill


def encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """A rendered prompt's token ids, as every backend runs it: no special tokens added. A chat template
    writes its own BOS, and a tokenizer that adds one (Llama 3, Gemma, Mistral) would make it two; HF
    `generate` here encodes the same way."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text before the earliest stop string."""
    end = len(text)
    for s in stop:
        index = text.find(s)
        if index != -1:
            end = min(end, index)
    return text[:end]


def completion_mask(
    completion_ids: torch.Tensor, eos_token_ids: Sequence[int], pad_token_id: int | None
) -> torch.Tensor:
    """1 for generated tokens up to and including the first EOS, 0 after it and on padding.

    completion_ids: [B, T] -> mask [B, T] (long). A sequence stopped by a stop string is followed by
    padding, which is masked too; a sequence with no EOS (cut by max_new_tokens) is all ones.
    """
    eos = torch.isin(completion_ids, torch.as_tensor(list(eos_token_ids), device=completion_ids.device))
    pad = completion_ids == pad_token_id if pad_token_id is not None else torch.zeros_like(eos)
    pad = pad & ~eos
    ended = eos | pad
    after_first_end = (ended.long().cumsum(dim=1) - ended.long()) > 0
    return (~after_first_end & ~pad).long()


def unmask_padding_after_stop(
    tokenizer: PreTrainedTokenizerBase, completion_ids: torch.Tensor, mask: torch.Tensor, stop: Sequence[str]
) -> torch.Tensor:
    """When the pad token is an EOS token (SmolLM2, Qwen2.5 base), the padding after a row that a stop
    string ended reads as a sampled EOS, and `completion_mask` keeps it: a token the policy never sampled
    would enter the loss. A row whose text before its last kept token already holds a stop string was ended
    by the stop string (generation stops as soon as one completes), so that last token is padding."""
    mask = mask.clone()
    for row, (ids, kept) in enumerate(zip(completion_ids, mask, strict=True)):
        length = int(kept.sum())
        if length < 2:
            continue
        # special tokens kept: the stop-string criterion reads every token's text, `<bos>` included
        before = tokenizer.decode(ids[: length - 1], skip_special_tokens=False)
        if cut_at_stop(before, stop) != before:
            mask[row, length - 1] = 0
    return mask


@dataclass
class Generation:
    """Output of one batched generate call. B = number of prompts x n."""

    prompt_ids: torch.Tensor  # [B, P] left-padded
    prompt_mask: torch.Tensor  # [B, P]
    completion_ids: torch.Tensor  # [B, T]
    completion_mask: torch.Tensor  # [B, T] 1 up to and including the first EOS
    texts: list[str]  # [B] decoded completions, cut at the first stop string
    logprobs: torch.Tensor | None = None  # [B, T] the sampler's log-prob of each completion token (vLLM)


def eos_token_ids(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def pad_as_end(tokenizer: PreTrainedTokenizerBase, eos_ids: Sequence[int]) -> list[int]:
    """The pad token when it is no EOS token (the character tokenizer's; SmolLM2's and Qwen2.5's pad is
    one): sampled mid-completion, it ends the completion as an EOS does, and the loss sees it. Before,
    generation went on past it while the mask and the text were cut there, so the policy could neither
    learn nor unlearn the choice, and vLLM, which keeps it as a plain token, disagreed."""
    pad = tokenizer.pad_token_id
    return [pad] if pad is not None and pad not in eos_ids else []


@contextmanager
def library_sampling_defaults(model: torch.nn.Module) -> Iterator[None]:
    """For the call, the model's generation config is the library's defaults.

    `generate` fills every field a call leaves unset from the checkpoint's generation_config.json
    (Qwen2.5-7B-Instruct's sets repetition_penalty=1.05, top_k=20, top_p=0.8), so greedy decoding and
    sampling would not be what the config says, and a planner's samples would not come from the
    softmax(logits / temperature) that the update scores. The EOS ids are read before (`eos_token_ids`).
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper
    saved = inner.generation_config
    inner.generation_config = GenerationConfig()
    try:
        yield
    finally:
        inner.generation_config = saved


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    n: int = 1,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    max_new_tokens: int = 64,
    stop: Sequence[str] = (),
    share_prefill: bool = True,
) -> Generation:
    """Generate `n` completions for each text in one left-padded batch.

    With `share_prefill`, each prompt is encoded once and its KV cache copied to its n samples
    (Hugging Face would otherwise run the prompt n times).
    """
    if not do_sample and n > 1:  # greedy samples are identical: decode once, repeat
        once = generate(model, tokenizer, texts, 1, max_new_tokens=max_new_tokens, stop=stop)
        return Generation(
            prompt_ids=once.prompt_ids.repeat_interleave(n, dim=0),
            prompt_mask=once.prompt_mask.repeat_interleave(n, dim=0),
            completion_ids=once.completion_ids.repeat_interleave(n, dim=0),
            completion_mask=once.completion_mask.repeat_interleave(n, dim=0),
            texts=[text for text in once.texts for _ in range(n)],
        )
    if tokenizer.padding_side != "left":
        tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    encoded = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    eos_ids = eos_token_ids(model, tokenizer)
    eos_ids += pad_as_end(tokenizer, eos_ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    kwargs = {"do_sample": do_sample, "max_new_tokens": max_new_tokens, "num_return_sequences": n}
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k if top_k is not None else 0)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if stop:
        kwargs.update(stop_strings=list(stop), tokenizer=tokenizer)
    was_training = model.training
    model.eval()
    try:
        with library_sampling_defaults(model):
            if n > 1 and share_prefill and encoded["input_ids"].shape[1] > 1:
                output = _generate_from_shared_prefill(model, encoded, n, eos_ids, pad_id, kwargs)
            else:
                output = model.generate(
                    **encoded, eos_token_id=eos_ids, pad_token_id=pad_id, use_cache=True, **kwargs
                )
    finally:
        model.train(was_training)
    prompt_len = encoded["input_ids"].shape[1]
    completion_ids = output[:, prompt_len:]
    mask = completion_mask(completion_ids, eos_ids, pad_id)
    if stop and pad_id in eos_ids:
        mask = unmask_padding_after_stop(tokenizer, completion_ids, mask, stop)
    decoded = [
        tokenizer.decode(ids[m.bool()], skip_special_tokens=True)
        for ids, m in zip(completion_ids, mask, strict=True)
    ]
    return Generation(
        prompt_ids=encoded["input_ids"].repeat_interleave(n, dim=0),
        prompt_mask=encoded["attention_mask"].repeat_interleave(n, dim=0),
        completion_ids=completion_ids,
        completion_mask=mask,
        texts=[cut_at_stop(text, stop) for text in decoded],
    )


def _generate_from_shared_prefill(model, encoded, n: int, eos_ids, pad_id, kwargs):
    """Prefill all but the last prompt token once per prompt, repeat the cache n times, then sample."""
    input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    prefix = model(
        input_ids=input_ids[:, :-1],
        attention_mask=attention_mask[:, :-1],
        position_ids=position_ids[:, :-1],
        use_cache=True,
    )
    # transformers >= 5.x names the KV cache `cache` (`past_key_values` before)
    cache_key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    cache = getattr(prefix, cache_key, None) or prefix.past_key_values
    cache.batch_repeat_interleave(n)
    kwargs = {**kwargs, "num_return_sequences": 1, cache_key: cache}
    return model.generate(
        input_ids=input_ids.repeat_interleave(n, dim=0),
        attention_mask=attention_mask.repeat_interleave(n, dim=0),
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
        use_cache=True,
        **kwargs,
    )
