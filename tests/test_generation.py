import torch

from planlift.generation import completion_mask, cut_at_stop, render_prompt
from planlift.models import build_char_tokenizer
from planlift.tasks.base import ChatPrompt

EOS, PAD = 2, 0


def test_completion_mask_keeps_tokens_through_the_first_eos():
    ids = torch.tensor(
        [
            [5, 6, EOS, 7, EOS],  # EOS then junk: mask after the first EOS
            [5, 6, 7, 8, 9],  # cut by max_new_tokens: all kept
            [5, PAD, PAD, PAD, PAD],  # stopped by a stop string, then padding
            [EOS, PAD, PAD, PAD, PAD],
        ]
    )
    mask = completion_mask(ids, [EOS], PAD)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]]


def test_completion_mask_when_pad_is_eos():
    ids = torch.tensor([[5, EOS, EOS, EOS]])
    assert completion_mask(ids, [EOS], EOS).tolist() == [[1, 1, 0, 0]]


def test_cut_at_earliest_stop():
    assert cut_at_stop("a</reasoning>b\nc", ["\n", "</reasoning>"]) == "a"
    assert cut_at_stop("abc", ["\n"]) == "abc"


def test_render_prompt_plain_and_chat():
    tokenizer = build_char_tokenizer()
    prompt = ChatPrompt(user="Q\n", system="S", prefill="answer=")
    assert render_prompt(tokenizer, prompt, None) == "S\nQ\nanswer="
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert render_prompt(tokenizer, prompt, None) == "<system>S<user>Q\n<assistant>answer="
    assert render_prompt(tokenizer, prompt, False) == "S\nQ\nanswer="
