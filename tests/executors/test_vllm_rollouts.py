"""`rollout=vllm` and `rollout=vllm_server` in the vllm tier: the planner's rollouts sampled by a real vLLM
engine (CPU build; in the training process or a server started by the session) that gets the planner's
weights through the worker extension. The engine's log-probs of its sampled tokens are
the check: they match the trained planner's after a sync and are far from them when the sync is skipped.

Every engine made here lives until the session ends (`keep_alive`): in-process vLLM engines share the
process's distributed state, and tearing one down breaks the others (the session executor's included).
"""

from __future__ import annotations

import pytest
import torch

from planlift.grpo.rollout import completion_logprobs, sample_rollout
from planlift.models import load_policy
from tests.executors.test_vllm_tier import train_steps

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="session")
def keep_alive():
    return []


@pytest.fixture(scope="session")
def planner_engine(debug_bootstrap):
    """(task, planner checkpoint, one VLLMEngine for the module)."""
    from planlift.grpo.vllm_engine import VLLMEngine

    task, bootstrap = debug_bootstrap
    return task, str(bootstrap.ensure().checkpoint("planner")), VLLMEngine(dtype="float32", seed=0)


def mismatch(policy, engine, task, seed=0):
    """Mean and max |log pi_engine - log pi_planner| over the sampled tokens, and the rollout."""
    problems = list(task.problems("validation"))[:8]
    rollout = sample_rollout(
        policy, task, problems, 4, temperature=0.7, max_new_tokens=24, engine=engine, seed=seed
    )
    with torch.no_grad():
        planner, _ = completion_logprobs(policy.model, rollout, slice(None), 0.7)
    diff = (planner - rollout.sampler_logprobs).abs()[rollout.completion_mask.bool()]
    return diff.mean().item(), diff.max().item(), rollout


def perturb(model: torch.nn.Module, scale: float, seed: int) -> None:
    """A stand-in for training: every weight moves by `scale` of its own std."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=generator) * p.std() * scale)


def test_engine_logprobs_match_the_planner_after_a_sync_and_not_without(planner_engine):
    task, planner, engine = planner_engine
    policy = load_policy(planner)
    engine.load_weights(policy)
    synced, synced_max, rollout = mismatch(policy, engine, task)
    assert rollout.completion_mask.sum() > 8 * 4  # real completions, not empty ones
    assert len(set(rollout.texts)) > 4  # sampled, not greedy
    decoded = [
        policy.tokenizer.decode(ids[m.bool()], skip_special_tokens=True)
        for ids, m in zip(rollout.completion_ids, rollout.completion_mask, strict=True)
    ]
    assert all(d.startswith(t) for d, t in zip(decoded, rollout.texts, strict=True))
    perturb(policy.model, 0.3, seed=1)  # the planner moves; the engine still holds the old weights
    stale, stale_max, _ = mismatch(policy, engine, task)
    engine.load_weights(policy)  # a second load into the running engine
    resynced, resynced_max, _ = mismatch(policy, engine, task)
    print(
        f"mean|max abs diff: synced {synced:.2e}|{synced_max:.2e} stale {stale:.2e}|{stale_max:.2e} "
        f"resynced {resynced:.2e}|{resynced_max:.2e}"
    )
    assert synced < 1e-3 and resynced < 1e-3
    assert stale > 50 * max(synced, resynced) and stale > 0.05
    assert engine.syncs == 2


def test_a_sampled_pad_ends_a_vllm_completion_as_it_ends_an_hf_one(planner_engine):
    """The character tokenizer's pad is no EOS: vLLM kept a sampled pad as a plain token and went on, while
    the HF engine cut its mask there. Both now end the completion at it (`pad_as_end`) and keep it."""
    task, planner, engine = planner_engine
    policy = load_policy(planner)
    pad = policy.tokenizer.pad_token_id
    assert pad != policy.tokenizer.eos_token_id
    head = policy.model.get_output_embeddings().weight
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the pad made likely
        head[pad] += 0.5 * head.norm(dim=1).mean() * torch.randn(head.shape[1], generator=generator)
    engine.load_weights(policy)
    _, _, rollout = mismatch(policy, engine, task)
    ended_by_pad = 0
    for ids, kept in zip(rollout.completion_ids, rollout.completion_mask, strict=True):
        length = int(kept.sum())
        assert pad not in ids[: length - 1].tolist()  # never inside a completion
        ended_by_pad += length > 0 and ids[length - 1].item() == pad
    assert ended_by_pad >= 1


def test_a_lora_planner_is_synced_as_base_plus_delta(planner_engine):
    task, planner, engine = planner_engine
    policy = load_policy(planner, lora={"r": 4, "alpha": 8, "dropout": 0.0})
    with torch.no_grad():  # a trained adapter (B starts at zero)
        generator = torch.Generator().manual_seed(0)
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    engine.load_weights(policy)
    synced, _, _ = mismatch(policy, engine, task)
    with policy.model.disable_adapter():  # the base alone is far from what the engine now samples
        base, _, _ = mismatch(policy, engine, task)
    assert synced < 1e-3 < 0.05 < base


def test_grpo_trains_with_vllm_rollouts_and_logs_sync_and_mismatch(vllm_executor, planner_engine, tmp_path):
    _, planner, engine = planner_engine
    logged = train_steps(
        tmp_path / "synced", "executor=vllm", "rollout=vllm", executor=vllm_executor, engine=engine
    )
    assert [s for s, _ in logged["train/time/weight_sync"]] == [0, 1, 2]
    assert all(v < 1e-3 for _, v in logged["train/rollout/logprob_abs_diff_mean"])
    assert logged["train/rollout/syncs"][-1][1] >= 3
    engine.load_weights(load_policy(planner))  # the starting planner, then no more loads
    engine.sync_weights = False
    try:
        stale = train_steps(
            tmp_path / "stale",
            "executor=vllm",
            "rollout=vllm",
            "algorithm.optimizer.lr=0.01",
            "reward=rm_only",  # the oracle rubric grades every trace: advantages that are not all 0
            "rm=oracle",
            executor=vllm_executor,
            engine=engine,
        )
    finally:
        engine.sync_weights = True
    diffs = [v for _, v in stale["train/rollout/logprob_abs_diff_mean"]]
    assert diffs[0] < 1e-3  # the engine starts from the planner's checkpoint
    assert diffs[-1] > 0.01  # two optimizer steps later it samples from a policy the update no longer has


def test_one_engine_serves_the_lora_planner_and_the_executor_like_two_engines(
    debug_bootstrap, keep_alive, tmp_path
):
    """Greedy planner texts (LoRA request) and executor texts (plain request) from one engine equal those
    of a merged-weights planner engine and a separate executor engine."""
    import hydra

    from planlift.grpo.vllm_engine import VLLMEngine
    from tests.test_configs import compose_with

    task, bootstrap = debug_bootstrap
    base = str(bootstrap.ensure().checkpoint("planner"))
    policy = load_policy(base, lora={"r": 4, "alpha": 8, "dropout": 0.0})
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    cfg = compose_with(["debug=fast", "executor=vllm"], tmp_path)
    cfg.executor.pretrained = base

    def texts(engine, executor):
        problems = list(task.problems("validation"))[:16]
        planner = sample_rollout(policy, task, problems, 1, greedy=True, max_new_tokens=48, engine=engine)
        reasonings = [task.extract_reasoning(t) for t in planner.texts]
        prompts = [task.executor_prompt(p, r) for p, r in zip(problems, reasonings, strict=True)]
        return planner.texts, [r.texts[0] for r in executor.generate(prompts, 1, greedy=True)]

    shared = VLLMEngine(dtype="float32", seed=0, share_with_executor=True, max_lora_rank=8)
    separate = VLLMEngine(dtype="float32", seed=0)
    executors = [hydra.utils.instantiate(cfg.executor, llm=shared.shared_llm(policy))]
    separate.load_weights(policy)  # merged base + delta
    executors.append(hydra.utils.instantiate(cfg.executor))
    keep_alive.extend([shared, separate, *executors])
    one = texts(shared, executors[0])
    two = texts(separate, executors[1])
    assert shared.syncs == 1 and shared._lora is not None
    assert one[0] == two[0]  # the planner: base + adapter in one engine == merged weights in another
    assert one[1] == two[1]  # the executor: plain requests see the bare base
    with policy.model.disable_adapter():  # the adapter matters: the base alone writes other texts
        bare = sample_rollout(
            policy, task, list(task.problems("validation"))[:16], 1, greedy=True, max_new_tokens=48
        ).texts
    assert bare != one[0]


def test_the_rollout_server_samples_what_the_colocated_engine_samples(planner_engine, rollout_server):
    """`rollout=vllm_server`: the same weights and seeds give the same tokens and log-probs as the engine in
    the training process, sampled and greedy."""
    from planlift.grpo.vllm_server import VLLMServerEngine

    task, planner, colocated = planner_engine
    server = VLLMServerEngine(rollout_server)
    policy = load_policy(planner)
    perturb(policy.model, 0.1, seed=2)  # weights neither engine started from
    server.load_weights(policy)
    colocated.load_weights(policy)
    problems = list(task.problems("validation"))[:8]
    for greedy in (False, True):
        one, two = (
            sample_rollout(
                policy, task, problems, 4, greedy=greedy, temperature=0.7, max_new_tokens=32, engine=e, seed=5
            )
            for e in (server, colocated)
        )
        assert one.texts == two.texts
        assert torch.equal(one.completion_ids, two.completion_ids)
        torch.testing.assert_close(one.sampler_logprobs, two.sampler_logprobs, rtol=0, atol=1e-5)
        assert len(set(one.texts)) > (4 if not greedy else 1)


def test_the_rollout_server_gets_each_sync_and_misses_a_skipped_one(planner_engine, rollout_server):
    from planlift.grpo.vllm_server import VLLMServerEngine

    task, planner, _ = planner_engine
    server = VLLMServerEngine(rollout_server)
    policy = load_policy(planner)
    perturb(policy.model, 0.05, seed=3)
    server.load_weights(policy)
    synced, _, _ = mismatch(policy, server, task)
    perturb(policy.model, 0.3, seed=1)  # not loaded: the server samples the previous weights
    stale, _, _ = mismatch(policy, server, task)
    server.load_weights(policy)
    resynced, _, _ = mismatch(policy, server, task)
    print(f"server mean abs diff: synced {synced:.2e} stale {stale:.2e} resynced {resynced:.2e}")
    assert synced < 1e-3 and resynced < 1e-3
    assert stale > 50 * max(synced, resynced) and stale > 0.05
    assert server.metrics()["syncs"] == 2 and server.metrics()["weight_megabytes"] > 1


def test_grpo_trains_with_rollouts_from_the_server(vllm_executor, rollout_server, tmp_path):
    logged = train_steps(
        tmp_path,
        "executor=vllm",
        "rollout=vllm_server",
        f"rollout.base_url={rollout_server}",
        executor=vllm_executor,
    )
    assert [s for s, _ in logged["train/time/weight_sync"]] == [0, 1, 2]
    assert all(v < 1e-3 for _, v in logged["train/rollout/logprob_abs_diff_mean"])
    assert logged["train/rollout/syncs"][-1][1] >= 3
    assert logged["train/rollout/server_retries"][-1][1] == 0


@pytest.mark.parametrize(
    ("hardware", "rollout"), [("ddp_sim", "vllm"), ("fsdp_sim", "vllm"), ("fsdp_sim", "vllm_server")]
)
def test_two_ranks_sample_from_synced_engines(request, vllm_session, tmp_path, hardware, rollout):
    """Two gloo ranks (DDP; FSDP2, whose weights are gathered on every rank first). `rollout=vllm`: each
    rank starts its own engine (`external_launcher`) and loads it. `rollout=vllm_server`: rank 0 loads
    the one server, the other waits at the barrier; both sample after it. The server's load is the same
    under DDP (a rank's full weights) once FSDP's are gathered, so DDP is run with the in-process engine."""
    from tests.test_train_e2e import scalars, train

    run = tmp_path / hardware
    server = []
    if rollout == "vllm_server":
        server = [f"rollout.base_url={request.getfixturevalue('rollout_server')}"]
    train(run, vllm_session, f"hardware={hardware}", f"rollout={rollout}", *server)
    logged = scalars(run)
    steps = [s for s, _ in logged["train/loss"]]
    assert len(steps) >= 3
    assert [s for s, _ in logged["train/time/weight_sync"]] == steps
    assert all(v < 1e-3 for _, v in logged["train/rollout/logprob_abs_diff_mean"])  # the mean of both ranks
    # the larger of the ranks' largest: a rank whose engine kept the starting weights (FSDP2 once gathered
    # them for rank 0 only) reached 0.25-1.7 from the first step after a sync
    assert all(v < 1e-3 for _, v in logged["train/rollout/logprob_abs_diff_max"])
    ranks = [run / "train.log", run / "train_ddp_process_1.log"]
    if rollout == "vllm":
        assert all("vllm rollouts: starting the engine" in log.read_text() for log in ranks)  # one each
    else:
        assert logged["train/rollout/weight_megabytes"][-1][1] > 1  # rank 0 wrote the gathered weights
        assert ranks[1].exists()  # a second rank ran
