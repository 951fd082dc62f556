"""Pure parts of the RM: input rendering and truncation, padding, losses and metrics (exact values)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from planlift.models import build_char_tokenizer
from planlift.rubric_rm import losses, metrics
from planlift.rubric_rm.inputs import CUT_MARK, encode_rm_input, pad_batch, render_rm_text, what_is_cut

PROBLEM = "S1=3 S2=0 S3=S1+S2 S4=S3-S2 S5=S4-S3 S6=S4-S5 S6?"
REASONING = "S3=3+0=3\nS4=3-0=3\nS5=3-3=0\nS6=3-0=3\n"


def test_render_matches_the_authors_format():
    assert render_rm_text("2+2?", " 2+2=4 \n", "math", "math") == (
        "<task>math</task>\n<type>math</type>\n<problem>\n2+2?\n</problem>\n<reasoning>\n2+2=4\n</reasoning>"
    )
    assert "<problem>\np\n</problem>\n<tests>\nassert f()\n</tests>\n<reasoning>" in render_rm_text(
        "p", "r", "code", "code", tests="assert f()"
    )


def test_truncation_cuts_the_problem_and_keeps_the_reasoning():
    tokenizer = build_char_tokenizer()
    full = encode_rm_input(tokenizer, PROBLEM, REASONING, "math", "math", 10_000)
    assert tokenizer.decode(full) == render_rm_text(PROBLEM, REASONING, "math", "math")
    for budget in (len(full) - 1, len(full) - 30):
        text = tokenizer.decode(encode_rm_input(tokenizer, PROBLEM, REASONING, "math", "math", budget))
        assert len(text) <= budget
        assert text.endswith("<reasoning>\n" + REASONING.strip() + "\n</reasoning>")  # reasoning whole
        assert CUT_MARK in text and PROBLEM[:10] in text  # the problem's head survives, its tail is cut


def test_control_token_spellings_in_the_reasoning_do_not_reach_the_rm():
    tokenizer = build_char_tokenizer()  # specials <pad> <bos> <eos> <unk>, read from text as tokens
    ids = encode_rm_input(tokenizer, PROBLEM, "S3=3+0=3<eos><|im_end|>\nS4=3-0=3", "math", "math", 10_000)
    assert not set(ids) & set(tokenizer.all_special_ids)
    assert ids == encode_rm_input(tokenizer, PROBLEM, "S3=3+0=3\nS4=3-0=3", "math", "math", 10_000)


def test_an_over_long_reasoning_keeps_its_end():
    tokenizer = build_char_tokenizer()
    reasoning = "\n".join(f"S{i}=1+1=2" for i in range(3, 60))
    text = tokenizer.decode(encode_rm_input(tokenizer, PROBLEM, reasoning, "math", "math", 120))
    assert len(text) == 120 and text.startswith("<task>math</task>\n<type>math</type>\n<problem>\n[...]")
    assert text.endswith("S59=1+1=2\n</reasoning>")


def test_what_is_cut_says_what_the_encoding_lost():
    tokenizer = build_char_tokenizer()
    long_reasoning = "\n".join(f"S{i}=1+1=2" for i in range(3, 60))
    full = len(encode_rm_input(tokenizer, PROBLEM, REASONING, "math", "math", 10_000))
    cases = [(REASONING, full, None), (REASONING, full - 30, "problem"), (long_reasoning, 120, "reasoning")]
    for reasoning, budget, cut in cases:
        assert what_is_cut(tokenizer, PROBLEM, reasoning, "math", "math", budget) == cut
        text = tokenizer.decode(encode_rm_input(tokenizer, PROBLEM, reasoning, "math", "math", budget))
        assert (CUT_MARK.strip() in text) == (cut is not None)
        assert (reasoning.strip() in text) == (cut != "reasoning")


def test_pad_batch_both_sides():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_losses():
    assert losses.pairwise_pos_neg(torch.zeros(3, 5)).item() == pytest.approx(math.log(2))
    assert losses.pairwise_pos_neg(torch.tensor([[1.0, 0.0]])).item() == pytest.approx(
        math.log1p(math.exp(-1))
    )
    scores = torch.tensor([[0.9, 0.2, 0.5, 0.1]])
    gold = torch.tensor([[1.0, 0.6, 0.3, 0.25]])
    # negative pairs with a gold gap >= 0.15: (0.6 vs 0.3) and (0.6 vs 0.25); (0.3 vs 0.25) is too close
    expected = (-F.logsigmoid(torch.tensor(0.2 - 0.5)) - F.logsigmoid(torch.tensor(0.2 - 0.1))) / 2
    assert losses.neg_neg_ranking(scores, gold, 0.15).item() == pytest.approx(expected.item())
    assert losses.neg_neg_ranking(scores, torch.full((1, 4), 0.5), 0.15).item() == 0.0
    logits = torch.randn(4, 5, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 5, (4, 5), generator=torch.Generator().manual_seed(1))
    manual = sum(F.cross_entropy(logits[:, d], labels[:, d]) for d in range(5))
    assert losses.dimension_ce(logits, labels).item() == pytest.approx(manual.item())
    assert losses.total_huber(torch.tensor([0.5]), torch.tensor([1.0])).item() == pytest.approx(0.125)


def test_positive_lm_scores_only_the_positives_next_tokens():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(6, 4, 8, generator=generator, requires_grad=True)  # 2 groups of K=3
    embeddings = torch.randn(11, 8, generator=generator)
    input_ids = torch.randint(0, 11, (6, 4), generator=generator)
    attention_mask = torch.ones(6, 4, dtype=torch.long)
    attention_mask[3, 3] = 0  # the second positive is right-padded by one token
    loss = losses.positive_lm(hidden, input_ids, attention_mask, embeddings, group_size=3)
    logits = hidden @ embeddings.T
    by_hand = torch.cat([
        F.cross_entropy(logits[0, :3], input_ids[0, 1:], reduction="none"),
        F.cross_entropy(logits[3, :2], input_ids[3, 1:3], reduction="none"),
    ]).mean()  # fmt: skip
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    loss.backward()
    assert hidden.grad[[1, 2, 4, 5]].abs().sum() == 0  # negatives teach no tokens
    assert hidden.grad[0].abs().sum() > 0 and hidden.grad[3, 2].abs().sum() == 0  # nor predict padding


def test_positive_lm_target_mask_keeps_only_the_masked_targets():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 5, 8, generator=generator, requires_grad=True)  # 2 groups of K=2
    embeddings = torch.randn(11, 8, generator=generator)
    input_ids = torch.randint(0, 11, (4, 5), generator=generator)
    attention_mask = torch.ones(4, 5, dtype=torch.long)
    span = torch.tensor([[0, 0, 1, 1, 1], [0] * 5, [0, 0, 0, 1, 1], [0] * 5])  # the reasoning's tokens
    loss = losses.positive_lm(hidden, input_ids, attention_mask, embeddings, 2, target_mask=span)
    logits = hidden @ embeddings.T
    by_hand = torch.cat([
        F.cross_entropy(logits[0, 1:4], input_ids[0, 2:5], reduction="none"),
        F.cross_entropy(logits[2, 2:4], input_ids[2, 3:5], reduction="none"),
    ]).mean()  # fmt: skip
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    loss.backward()
    assert hidden.grad[0, 0].abs().sum() == 0 and hidden.grad[2, :2].abs().sum() == 0  # problem tokens
    assert hidden.grad[0, 1].abs().sum() > 0  # predicts the reasoning's first token


def test_positive_lm_under_left_padding_equals_the_unpadded_loss():
    """A padding position's hidden state predicts no token (not even the first real one)."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 5, 8, generator=generator)  # 1 group of K=2, unpadded
    embeddings = torch.randn(11, 8, generator=generator)
    input_ids = torch.randint(1, 11, (2, 5), generator=generator)
    mask = torch.ones(2, 5, dtype=torch.long)
    unpadded = losses.positive_lm(hidden, input_ids, mask, embeddings, group_size=2)
    pad = 3
    padded_hidden = torch.cat([torch.randn(2, pad, 8, generator=generator), hidden], dim=1)
    padded_ids = torch.cat([torch.zeros(2, pad, dtype=torch.long), input_ids], dim=1)
    padded_mask = torch.cat([torch.zeros(2, pad, dtype=torch.long), mask], dim=1)
    padded = losses.positive_lm(padded_hidden, padded_ids, padded_mask, embeddings, group_size=2)
    assert padded.item() == pytest.approx(unpadded.item(), rel=1e-6)
    span = torch.cat([torch.ones(2, pad, dtype=torch.long), mask], dim=1)  # a target mask does not undo it
    spanned = losses.positive_lm(padded_hidden, padded_ids, padded_mask, embeddings, 2, target_mask=span)
    assert spanned.item() == pytest.approx(unpadded.item(), rel=1e-6)


def test_prefix_rubric_labels_each_token_by_whether_the_candidate_has_departed():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 2, 3, generator=generator)  # 1 group of K=2, T=4, D=2 dimensions, L=3
    total = torch.randn(2, 4, generator=generator)
    labels = torch.tensor([[2, 2], [0, 1]])
    gold = torch.tensor([1.0, 0.3])
    span = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1]])
    departs = torch.tensor([4, 2])  # the positive never departs; the negative from position 2 on
    loss = losses.prefix_rubric(logits, total, labels, gold, span, departs, group_size=2)

    def term(row, position, label, target):
        ce = sum(F.cross_entropy(logits[row, position, d][None], torch.tensor([label[d]])) for d in range(2))
        return ce + F.binary_cross_entropy_with_logits(total[row, position], torch.tensor(target))

    by_hand = [term(0, p, [2, 2], 1.0) for p in (1, 2, 3)]
    by_hand += [term(1, 1, [2, 2], 1.0), term(1, 2, [0, 1], 0.3), term(1, 3, [0, 1], 0.3)]
    assert loss.item() == pytest.approx(torch.stack(by_hand).mean().item(), rel=1e-5)
    without_total = losses.prefix_rubric(logits, None, labels, gold, span, departs, group_size=2)
    assert without_total.item() < loss.item()


def test_metrics():
    scores = torch.tensor([[0.9, 0.1, 0.95, 0.5], [0.8, 0.1, 0.2, 0.3]])
    assert metrics.pairwise_accuracy(scores) == pytest.approx(5 / 6)
    assert metrics.group_accuracy(scores) == pytest.approx(0.5)
    errors = metrics.errors(torch.tensor([0.5, 1.0]), torch.tensor([1.0, 1.0]), "total")
    assert errors["total_mae"] == pytest.approx(0.25) and errors["total_rmse"] == pytest.approx(
        math.sqrt(0.125)
    )
    kinds = ["positive", "a", "b", "a", "positive", "a", "b", "a"]
    assert metrics.pairwise_accuracy_by_kind(scores, kinds) == {"pair_acc/a": 1.0, "pair_acc/b": 0.5}
    logits = torch.zeros(2, 2, 5)
    logits[0, 0, 3] = logits[1, 0, 1] = logits[0, 1, 2] = logits[1, 1, 2] = 1
    accuracy = metrics.dimension_accuracy(logits, torch.tensor([[3, 2], [0, 2]]), ["x", "y"])
    assert accuracy == {"dim_acc/x": 0.5, "dim_acc/y": 1.0}
    # (0.9 > 0.8, 0.9 > 0.1, 0.3 < 0.8, 0.3 > 0.1): 3 of 4 correct-vs-flawed pairs ordered
    assert metrics.auroc([0.9, 0.8, 0.3, 0.1], [True, False, True, False]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="both"):
        metrics.auroc([0.1, 0.2], [True, True])
