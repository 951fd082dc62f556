"""One on-policy GRPO update on a real tiny planner moves each sample's log-probability with its advantage
(a sign flip or a shifted completion mask breaks this)."""

import torch

from planlift.grpo.objective import LossNormalizer, grpo_loss
from planlift.grpo.rollout import completion_logprobs, sample_rollout
from planlift.models import load_policy


def sequence_logprobs(model, rollout, temperature):
    with torch.no_grad():
        logprobs, _ = completion_logprobs(model, rollout, slice(None), temperature)
    return (logprobs * rollout.completion_mask).sum(dim=1)


def test_update_raises_positive_and_lowers_negative_advantage_samples(tiny_checkpoint, procedural_task):
    torch.manual_seed(0)
    policy = load_policy(str(tiny_checkpoint))
    problems = list(procedural_task.problems("train"))[:4]
    rollout = sample_rollout(policy, procedural_task, problems, 4, temperature=0.7, max_new_tokens=16)
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0] * 4)
    before = sequence_logprobs(policy.model, rollout, 0.7)

    optimizer = torch.optim.SGD(policy.model.parameters(), lr=0.05)
    logprobs, _ = completion_logprobs(policy.model, rollout, slice(None), 0.7)
    mask = rollout.completion_mask
    normalizer = LossNormalizer.for_batch("token_mean", mask, 16)
    grpo_loss(logprobs, logprobs.detach(), advantages, mask, normalizer).loss.backward()
    optimizer.step()

    change = sequence_logprobs(policy.model, rollout, 0.7) - before
    assert (change[advantages > 0] > 0).float().mean() >= 0.75
    assert (change[advantages < 0] < 0).float().mean() >= 0.75
    assert torch.corrcoef(torch.stack([change, advantages]))[0, 1] > 0.5
