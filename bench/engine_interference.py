"""Does a vLLM engine in the training process slow the update? The same LoRA micro-step (forward, backward,
AdamW step) of the `model=smollm2` planner on a fixed random batch, timed `--repeats` times before and
after a `rollout=vllm` engine starts in the process (and has the planner's weights loaded). The engine is
idle while the update runs.

    .venv-vllm/bin/python bench/engine_interference.py [--repeats 5] [--batch 8] [--length 200]

Prints the median seconds before and after and their ratio (> 1: the update is slower beside the engine).
`--control` starts no engine: the ratio of two plain runs of timings, for drift between them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--control", action="store_true", help="start no engine: the same two timings, for drift between them"
    )
    args = parser.parse_args()
    os.environ.update(
        VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_KVCACHE_SPACE="2", VLLM_CPU_OMP_THREADS_BIND="nobind"
    )
    sys.path.insert(0, str(ROOT))
    import torch
    from tests.test_configs import compose_with

    from planlift import runtime
    from planlift.grpo.vllm_engine import VLLMEngine
    from planlift.models import load_policy

    runtime.configure_threads(args.threads)
    cfg = compose_with(["experiment=gsm8k_smollm2"], Path(tempfile.mkdtemp()))
    policy = load_policy(**{k: v for k, v in cfg.model.items() if k != "_target_"})
    ids = torch.randint(100, 2000, (args.batch, args.length), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=1e-6)

    def update() -> float:
        start = time.perf_counter()
        policy.model(input_ids=ids).logits.float().log_softmax(-1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    update()  # warm-up
    before = [update() for _ in range(args.repeats)]
    if not args.control:
        VLLMEngine(seed=0).load_weights(policy)
    after = [update() for _ in range(args.repeats)]
    result = {
        "settings": vars(args),
        "torch_threads_after": torch.get_num_threads(),
        "before_s": before,
        "after_s": after,
        "ratio_after_before": statistics.median(after) / statistics.median(before),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
