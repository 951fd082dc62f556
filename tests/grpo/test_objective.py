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


def test_the_entropy_is_a_metric_outside_the_graph():
    """Only the log-probs carry gradient: the entropy's [B, T, V] intermediates are not kept for backward."""
    logits = torch.randn(2, 3, 5, requires_grad=True)
    logp, entropy = token_logprobs(logits, torch.zeros(2, 3, dtype=torch.long))
    assert logp.requires_grad and not entropy.requires_grad
    expected = torch.distributions.Categorical(logits=logits.detach()).entropy()
    torch.testing.assert_close(entropy, expected)


def test_kl_estimators():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    r = 0.25 / 0.5
    assert kl_divergence(logp, ref, "k2").item() == pytest.approx(0.5 * math.log(r) ** 2)
    assert kl_divergence(logp, ref, "k3").item() == pytest.approx(r - math.log(r) - 1)
    assert kl_divergence(ref, ref, "k3").item() == 0.0
    with pytest.raises(ValueError, match="k1"):
        kl_divergence(logp, ref, "k1")


def _expected_penalty_gradient(estimator: str | None, theta: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """E_{x ~ pi}[grad of the per-token penalty at x], exactly (all five outcomes weighted by pi), as
    training estimates it from samples; None: the penalty as -log r (k1)."""
    theta = theta.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, dim=0)
    per_outcome = logp - ref if estimator is None else kl_divergence(logp, ref, estimator)
    (per_outcome * logp.exp().detach()).sum().backward()
    return theta.grad


def _gradient(function, theta: torch.Tensor) -> torch.Tensor:
    theta = theta.clone().requires_grad_(True)
    function(theta).backward()
    return theta.grad


def test_what_each_kl_penalty_pulls_toward():
    """k2's gradient follows KL(pi || ref), k3's the reverse KL(ref || pi); k1's is zero, which is why it is
    not offered."""
    generator = torch.Generator().manual_seed(0)
    theta = torch.randn(5, generator=generator, dtype=torch.float64)
    ref = torch.log_softmax(torch.randn(5, generator=generator, dtype=torch.float64), dim=0)

    def forward_kl(t):
        logp = torch.log_softmax(t, dim=0)
        return (logp.exp() * (logp - ref)).sum()

    def reverse_kl(t):
        return (ref.exp() * (ref - torch.log_softmax(t, dim=0))).sum()

    assert torch.allclose(_expected_penalty_gradient("k2", theta, ref), _gradient(forward_kl, theta))
    assert torch.allclose(_expected_penalty_gradient("k3", theta, ref), _gradient(reverse_kl, theta))
    assert _expected_penalty_gradient(None, theta, ref).abs().max().item() < 1e-12
    assert _gradient(forward_kl, theta).abs().max().item() > 1e-2  # the KL itself does pull


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


def test_dr_grpo_divides_by_the_batch_shape_whatever_is_masked():
    """Dr. GRPO's constant is rows x max length: masking a sample removes its tokens from the sum, not
    its row from the denominator (with the unmasked count, 3 masked of 8 made the step 1.6x larger)."""
    mask = torch.ones(8, 4)
    per_token = torch.ones(8, 4)
    full = LossNormalizer.for_batch("dr_grpo", mask, max_length=4).reduce(per_token, mask)
    mask[:3] = 0
    masked = LossNormalizer.for_batch("dr_grpo", mask, max_length=4).reduce(per_token, mask)
    assert full.item() == pytest.approx(1.0) and masked.item() == pytest.approx(5 / 8)


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "dr_grpo"])
def test_micro_batches_add_up_to_the_full_batch(aggregation):
    normalizer = LossNormalizer.for_batch(aggregation, MASK, max_length=8)
    parts = sum(normalizer.reduce(PER_TOKEN[i : i + 1], MASK[i : i + 1]) for i in range(2))
    assert parts.item() == pytest.approx(normalizer.reduce(PER_TOKEN, MASK).item())


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "dr_grpo"])
def test_ranks_averaging_their_gradients_optimise_the_global_batch_loss(aggregation):
    """Under DDP each rank's loss uses the totals of every rank's batch, times the number of ranks: the
    average of the ranks' gradients is then the gradient of the one-process loss of the whole batch. Rank 0
    holds two short completions and a masked sample, rank 1 one long one."""
    mask = torch.tensor(
        [[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
    )
    per_token = torch.arange(1.0, 17.0).view(4, 4).requires_grad_(True)
    LossNormalizer.for_batch(aggregation, mask, max_length=4).reduce(per_token, mask).backward()
    one_process = per_token.grad.clone()

    shards = (slice(0, 3), slice(3, 4))
    counts = [LossNormalizer.counts(mask[rows]) for rows in shards]
    totals = tuple(sum(c[i] for c in counts) for i in range(3))
    averaged, per_rank_totals = torch.zeros(4, 4), torch.zeros(4, 4)
    for rows in shards:
        for target, normalizer in (
            (averaged, LossNormalizer.for_batch(aggregation, mask[rows], 4, totals, ranks=2)),
            (per_rank_totals, LossNormalizer.for_batch(aggregation, mask[rows], 4)),
        ):
            per_token.grad = None
            normalizer.reduce(per_token[rows], mask[rows]).backward()
            target += per_token.grad / 2  # what DDP's all-reduce does
    assert torch.allclose(averaged, one_process)
    assert not torch.allclose(per_rank_totals, one_process)  # each rank's own totals weigh tokens unevenly


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


def test_clip_fraction_counts_only_the_tokens_whose_gradient_the_clip_removed():
    """Ratios 1.5, 0.5 and 0.5: out of bounds all three, but the min keeps the unclipped term (and its
    gradient) for 0.5 with A > 0; with A < 0 the clip at 0.8 cuts 0.5."""
    old = torch.zeros(2, 2)
    logp = torch.log(torch.tensor([[1.5, 0.5], [0.5, 1.0]])).requires_grad_(True)
    mask = torch.ones(2, 2)
    adv = torch.tensor([1.0, -1.0])
    terms = grpo_loss(logp, old, adv, mask, LossNormalizer.for_batch("token_mean", mask, 2))
    terms.loss.backward()
    cut = (logp.grad == 0).float().mean().item()
    assert cut == 0.5 and terms.clip_fraction.item() == cut


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


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "dr_grpo"])
def test_positions_past_the_end_cannot_make_the_loss_nan(aggregation):
    """A padded position whose log-probs are far apart (k3's exp and the ratio overflow there) is masked
    out of the loss and its gradient, not multiplied by 0 (inf * 0 is nan)."""
    logp = torch.tensor([[-1.0, -200.0], [-0.5, -0.7]], requires_grad=True)
    old = torch.tensor([[-1.1, 0.0], [-0.5, -0.6]])
    ref = torch.tensor([[-1.2, 0.0], [-0.4, -0.7]])
    mask = torch.tensor([[1, 0], [1, 1]])
    normalizer = LossNormalizer.for_batch(aggregation, mask, 2)
    args = (torch.tensor([1.0, -1.0]), mask, normalizer)
    terms = grpo_loss(logp, old, *args, ref_logprobs=ref, kl_coef=0.1)
    terms.loss.backward()
    assert torch.isfinite(terms.loss) and torch.isfinite(terms.kl) and torch.isfinite(logp.grad).all()
    assert logp.grad[0, 1].item() == 0.0
    benign = logp.detach().clone()
    benign[0, 1] = -1.0  # what a masked position holds does not change the loss
    expected = grpo_loss(benign, old, *args, ref_logprobs=ref, kl_coef=0.1)
    assert terms.loss.item() == pytest.approx(expected.loss.item())
    assert terms.kl.item() == pytest.approx(expected.kl.item())
