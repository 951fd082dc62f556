"""Engine-agnostic parts of `rollout=vllm`: the weights an engine gets (full, LoRA merged), truncated
importance weights, and the update's mismatch logging (an engine double that returns log-probs; the real
vLLM engines are tested in tests/executors/test_vllm_rollouts.py, vllm tier)."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch

from planlift.generation import Generation
from planlift.grpo.engines import HFEngine, RolloutEngine
from planlift.grpo.objective import LossNormalizer, grpo_loss, truncated_is_weights
from planlift.grpo.rollout import Rollout, completion_logprobs
from planlift.grpo.weights import planner_weights
from planlift.models import load_policy


def test_full_weights_are_the_state_dict(tiny_checkpoint):
    policy = load_policy(str(tiny_checkpoint))
    weights = dict(planner_weights(policy))
    state = policy.model.state_dict()
    assert weights.keys() == state.keys()
    assert all(torch.equal(weights[k], state[k]) for k in state)


def test_lora_weights_equal_the_merged_model_and_leave_the_planner_untouched(tiny_checkpoint):
    policy = load_policy(str(tiny_checkpoint), lora={"r": 4, "alpha": 8, "dropout": 0.0})
    torch.manual_seed(0)
    with torch.no_grad():  # a trained adapter: B is zero at initialisation
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    weights = dict(planner_weights(policy))
    merged = copy.deepcopy(policy.model).merge_and_unload().state_dict()
    assert weights.keys() == merged.keys()
    for name, tensor in merged.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-6, atol=1e-6, msg=name)
    original = load_policy(str(tiny_checkpoint)).model.state_dict()
    changed = [k for k in merged if not torch.equal(merged[k], original[k])]
    assert any("q_proj" in k for k in changed)  # the delta is really added
    after = policy.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no merge/unmerge of the planner


def test_truncated_importance_weights_cap_the_ratio_and_scale_the_policy_term():
    train = torch.log(torch.tensor([[0.5, 0.2, 0.9]]))
    sampler = torch.log(torch.tensor([[0.5, 0.05, 0.3]]))
    weights = truncated_is_weights(train, sampler, cap=2.0)
    torch.testing.assert_close(weights, torch.tensor([[1.0, 2.0, 2.0]]))  # 1, min(4, 2), min(3, 2)
    logprobs = train.clone().requires_grad_(True)
    mask = torch.ones(1, 3, dtype=torch.long)
    normalizer = LossNormalizer.for_batch("token_mean", mask, 3)
    plain = grpo_loss(logprobs, logprobs.detach(), torch.tensor([1.0]), mask, normalizer)
    weighted = grpo_loss(
        logprobs, logprobs.detach(), torch.tensor([1.0]), mask, normalizer, is_weights=weights
    )
    (grad_plain,) = torch.autograd.grad(plain.loss, logprobs)
    (grad_weighted,) = torch.autograd.grad(weighted.loss, logprobs)
    torch.testing.assert_close(grad_weighted, grad_plain * weights)


class ShiftedEngine(RolloutEngine):
    """Samples with HF generate and reports the trained model's log-probs of its tokens plus `shift` on
    every token (a stand-in for an engine whose distribution differs), counting weight loads."""

    holds_weights = True

    def __init__(self, shift: float) -> None:
        self.shift = shift
        self.loads: list[int] = []
        self.calls: list[str] = []

    def start(self, policy) -> None:
        self.calls.append("start")

    def load_weights(self, policy) -> None:
        self.loads.append(1)
        self.calls.append("load")

    def sample(self, policy, texts, n, **kwargs) -> Generation:
        out = HFEngine().sample(policy, texts, n, **kwargs)
        rollout = Rollout([], n, out.prompt_ids, out.prompt_mask, out.completion_ids, out.completion_mask, [])
        with torch.no_grad():
            trained, _ = completion_logprobs(policy.model, rollout, slice(None), kwargs["temperature"])
        out.logprobs = trained + self.shift
        return out


@pytest.mark.parametrize("tis_cap", [None, 2.0])
def test_the_update_logs_the_mismatch_and_the_engine_loads_weights_once_per_step(
    tiny_checkpoint, procedural_task, tis_cap
):
    from tests.grpo.test_module import build, fit_one_step

    engine = ShiftedEngine(shift=-0.3)  # pi_train / pi_rollout = e^0.3 = 1.35 on every token
    module = build(tiny_checkpoint, procedural_task, rollout_engine=engine, tis_cap=tis_cap)
    logged = {}
    module.log_dict = lambda metrics, **kwargs: logged.update(metrics)
    torch.manual_seed(0)
    fit_one_step(module, procedural_task)
    assert len(engine.loads) == 1
    assert engine.calls == ["start", "load"]  # the engine starts outside the timed weight sync
    assert "train/time/weight_sync" in logged
    assert logged["train/rollout/logprob_abs_diff_mean"] == pytest.approx(0.3, abs=1e-5)
    assert logged["train/rollout/logprob_abs_diff_max"] == pytest.approx(0.3, abs=1e-5)
    if tis_cap is None:
        assert "train/rollout/is_weight_mean" not in logged
    else:
        assert logged["train/rollout/is_weight_mean"] == pytest.approx(math.exp(0.3), rel=1e-4)
        assert logged["train/rollout/is_capped_fraction"] == 0.0


@pytest.mark.parametrize(
    ("engine", "top_p", "warned"), [("synced", 0.95, True), ("synced", 1.0, False), ("hf", 0.95, False)]
)
def test_a_nucleus_with_a_synced_engine_is_warned(
    tiny_checkpoint, procedural_task, caplog, engine, top_p, warned
):
    """vLLM's log-probs are the nucleus's: with top_p < 1 the weights and the mismatch measure its mass."""
    from tests.grpo.test_module import build

    rollout_engine = ShiftedEngine(shift=0.0) if engine == "synced" else HFEngine()
    module = build(tiny_checkpoint, procedural_task, rollout_engine=rollout_engine, top_p=top_p, tis_cap=2.0)
    with caplog.at_level(logging.WARNING, logger="planlift.grpo.module"):
        module.on_fit_start()
    assert ("the nucleus's mass" in caplog.text) is warned


class EvalModeEngine(RolloutEngine):
    """Returns the log-probs of the policy that sampled, in eval mode (an engine without dropout)."""

    def sample(self, policy, texts, n, **kwargs) -> Generation:
        out = HFEngine().sample(policy, texts, n, **kwargs)
        rollout = Rollout([], n, out.prompt_ids, out.prompt_mask, out.completion_ids, out.completion_mask, [])
        was_training = policy.model.training
        policy.model.eval()
        with torch.no_grad():
            out.logprobs, _ = completion_logprobs(policy.model, rollout, slice(None), kwargs["temperature"])
        policy.model.train(was_training)
        return out


def test_importance_weights_come_from_the_frozen_pass_without_dropout_noise(tiny_checkpoint, procedural_task):
    """With LoRA dropout active and num_iterations=2, the weights compare the engine's log-probs with the
    frozen eval-mode pass (equal here: weight 1), not with the first train-mode pass (dropout noise)."""
    from tests.grpo.test_module import build_lora, fit_one_step

    torch.manual_seed(0)
    module = build_lora(
        tiny_checkpoint,
        procedural_task,
        dropout=0.5,
        num_iterations=2,
        tis_cap=2.0,
        rollout_engine=EvalModeEngine(),
    )
    with torch.no_grad():  # a non-zero adapter, so that dropout on its input changes the output
        for name, param in module.planner.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    logged = {}
    module.log_dict = lambda metrics, **kwargs: logged.update(metrics)
    fit_one_step(module, procedural_task)
    assert logged["train/rollout/is_weight_mean"] == pytest.approx(1.0, abs=1e-5)
    assert logged["train/rollout/logprob_abs_diff_max"] == pytest.approx(0.0, abs=1e-5)


def test_importance_weights_scale_the_update(tiny_checkpoint, procedural_task):
    """With every weight e^0.3 (under the cap), the SGD step is e^0.3 times the uncorrected one."""
    from tests.grpo.test_module import build, fit_one_step

    initial = load_policy(str(tiny_checkpoint)).model.state_dict()
    moves = {}
    for cap in (None, 2.0):
        torch.manual_seed(0)
        module = build(tiny_checkpoint, procedural_task, rollout_engine=ShiftedEngine(-0.3), tis_cap=cap)
        after = fit_one_step(module, procedural_task)
        moves[cap] = torch.cat([(after[k] - initial[k]).flatten() for k in after])
    assert moves[None].abs().sum() > 0
    torch.testing.assert_close(moves[2.0], moves[None] * math.exp(0.3), rtol=1e-3, atol=1e-7)


class CPUEngine(RolloutEngine):
    """Returns its tensors on the CPU, as the vLLM engines do whatever device the planner is on."""

    def sample(self, policy, texts, n, **kwargs) -> Generation:
        out = HFEngine().sample(policy, texts, n, **kwargs)
        out.logprobs = torch.zeros(out.completion_ids.shape)
        return out


def test_the_rollout_is_on_the_planners_device_whatever_the_engine_returns(tiny_checkpoint, procedural_task):
    """A planner on another device (the meta device stands in for a GPU here) gets the rollout there: the
    update multiplies it with tensors on that device."""
    from tests.grpo.test_module import build

    module = build(tiny_checkpoint, procedural_task, rollout_engine=CPUEngine())
    module._device = torch.device("meta")  # what Lightning sets when it moves the module
    rollout = module.sample(procedural_task.problems("train")[:2], 3)
    tensors = (rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids, rollout.completion_mask)
    assert all(t.device.type == "meta" for t in (*tensors, rollout.sampler_logprobs))
    assert rollout.completion_ids.shape[0] == 6 and len(rollout.texts) == 6
