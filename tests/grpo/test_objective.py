import math

import pytest
import torch

from planlift.grpo.objective import LossNormalizer, group_advantages, grpo_loss, kl_divergence, token_logprobs


def test_group_advantages_hand_computed():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    mask = torch.ones(8, dtype=torch.bool)
    adv = group_advantages(rewards, mask, group_size=4, eps=0.0)
    # group 1: mean 0.25, unbiased std sqrt(0.75 / 3) = 0.5
    assert adv[:4].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5])
    assert adv[4:].tolist() == [0.0] * 4  # zero-std group


def test_group_advantages_without_std_is_dr_grpo():
    adv = group_advantages(
        torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.ones(4, dtype=torch.bool), 4, scale_by_std=False
    )
    assert adv.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_masked_samples_leave_group_statistics():
    rewards = torch.tensor([1.0, 0.0, 123.0, 0.0, 7.0, 0.0, 0.0, 0.0])
    mask = torch.tensor([True, True, False, True, True, False, False, False])
    adv = group_advantages(rewards, mask, group_size=4, eps=0.0)
    # group 1 over {1, 0, 0}: mean 1/3, std sqrt((4/9 + 1/9 + 1/9) / 2) = sqrt(1/3)
    std = math.sqrt(1 / 3)
    assert adv[:4].tolist() == pytest.approx([(2 / 3) / std, (-1 / 3) / std, 0.0, (-1 / 3) / std])
    assert adv[4:].tolist() == [0.0] * 4  # a single unmasked sample has no advantage


@pytest.mark.parametrize("group_size", [3, 4, 5, 6, 8])
def test_a_group_of_equal_rewards_has_no_advantage(group_size):
    """Equal rewards whose float32 mean misses them by an ulp (0.65 in groups of 3, 5, 6, 8), with and
    without a masked sample (even a NaN one), give exactly 0."""
    values = [*torch.linspace(-0.5, 1.0, 301).tolist(), 0.65, 0.5 + 0.5 * 0.9 / 3]
    rewards = torch.tensor(values).repeat_interleave(group_size)
    mask = torch.ones_like(rewards, dtype=torch.bool)
    assert group_advantages(rewards, mask, group_size).abs().max().item() == 0.0
    rewards[::group_size], mask[::group_size] = float("nan"), False
    assert group_advantages(rewards, mask, group_size).abs().max().item() == 0.0
    assert group_advantages(rewards, mask, group_size, scale_by_std=False).abs().max().item() == 0.0


def test_token_logprobs_and_entropy():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    logp, entropy = token_logprobs(logits, torch.tensor([[0, 1]]))
    assert logp[0].tolist() == pytest.approx([math.log(0.5), math.log(0.8)])
    assert entropy[0, 0].item() == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    # temperature 2 flattens the distribution: log softmax(logits / 2)
    logp_t, _ = token_logprobs(logits, torch.tensor([[0, 1]]), temperature=2.0)
    probs = torch.tensor([0.5, 0.25, 0.25]).sqrt()
    assert logp_t[0, 0].item() == pytest.approx(math.log(probs[0] / probs.sum()))


def test_kl_estimators():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    r = 0.25 / 0.5
    assert kl_divergence(logp, ref, "k1").item() == pytest.approx(-math.log(r))
    assert kl_divergence(logp, ref, "k2").item() == pytest.approx(0.5 * math.log(r) ** 2)
    assert kl_divergence(logp, ref, "k3").item() == pytest.approx(r - math.log(r) - 1)
    assert kl_divergence(ref, ref, "k3").item() == 0.0


MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 100.0, 100.0, 100.0]])


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        ("token_mean", (1 + 2 + 3 + 4) / 4),
        ("sequence_mean", ((1 + 2 + 3) / 3 + 4 / 1) / 2),
        ("dr_grpo", (1 + 2 + 3 + 4) / (2 * 8)),
    ],
)
def test_loss_aggregations(aggregation, expected):
    normalizer = LossNormalizer.for_batch(aggregation, MASK, max_length=8)
    assert normalizer.reduce(PER_TOKEN, MASK).item() == pytest.approx(expected)


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "dr_grpo"])
def test_micro_batches_add_up_to_the_full_batch(aggregation):
    normalizer = LossNormalizer.for_batch(aggregation, MASK, max_length=8)
    parts = sum(normalizer.reduce(PER_TOKEN[i : i + 1], MASK[i : i + 1]) for i in range(2))
    assert parts.item() == pytest.approx(normalizer.reduce(PER_TOKEN, MASK).item())


def test_on_policy_loss_is_minus_advantage_times_logprob():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.5]], requires_grad=True)
    mask = torch.ones(2, 2)
    adv = torch.tensor([2.0, -1.0])
    terms = grpo_loss(logp, logp.detach(), adv, mask, LossNormalizer.for_batch("token_mean", mask, 2))
    terms.loss.backward()
    # d/dlogp of -(A * ratio) at ratio 1 is -A / 4 tokens
    assert logp.grad.flatten().tolist() == pytest.approx([-0.5, -0.5, 0.25, 0.25])
    assert terms.clip_fraction.item() == 0.0 and terms.kl is None


def test_clipping_stops_the_gradient_beyond_the_trust_region():
    old = torch.zeros(1, 2)
    logp = torch.tensor([[math.log(1.5), math.log(1.1)]], requires_grad=True)  # ratios 1.5 and 1.1
    mask = torch.ones(1, 2)
    terms = grpo_loss(logp, old, torch.tensor([1.0]), mask, LossNormalizer.for_batch("token_mean", mask, 2))
    terms.loss.backward()
    assert logp.grad[0, 0].item() == 0.0  # clipped at 1.2
    assert logp.grad[0, 1].item() == pytest.approx(-1.1 / 2)
    assert terms.clip_fraction.item() == 0.5


def test_kl_penalty_enters_the_loss():
    logp = torch.tensor([[math.log(0.5)]], requires_grad=True)
    ref = torch.tensor([[math.log(0.25)]])
    mask = torch.ones(1, 1)
    normalizer = LossNormalizer.for_batch("token_mean", mask, 1)
    terms = grpo_loss(
        logp, logp.detach(), torch.tensor([0.0]), mask, normalizer, ref_logprobs=ref, kl_coef=0.1
    )
    kl = 0.5 - math.log(0.5) - 1
    assert terms.kl.item() == pytest.approx(kl)
    assert terms.loss.item() == pytest.approx(0.1 * kl)
