"""Language-model warm-up of a tiny RM backbone on correct procedural traces, in two phases.

Phase 1 reads each correct trace's reasoning alone (no tags, no problem): with nothing to look up, the
model has to learn each step line's arithmetic, operation included, from the line itself. Phase 2 reads
the full RM input and is taught only the reasoning's tokens, so it also learns to look the operations
and operands up in the problem. Next-token cross-entropy through the tied input embeddings (as
`module.lm_weight`), AdamW at a constant rate, 32 traces drawn per step by a seeded stream, one thread:
the same command gives the same weights. The exported reward_model/ (fresh rubric heads) is the
backbone for `python src/train_rm.py rm_stage=dense_rubric rm_backbone.pretrained=<out>`.

The same two phases exist as train_rm stages (rm_stage=lm_reasoning, rm_stage=lm_full); their phase 1
did not make the late jump to the operation in the runs reported in docs/reasoning_rm.md, this one did.

    python scripts/warmup_trace_lm.py outputs/groups/procedural/train.jsonl outputs/rm_tiny/warmup
"""

from __future__ import annotations

import argparse
import logging
import random

import torch
import torch.nn.functional as F

from planlift import runtime
from planlift.rm.base import MATH_DIMENSIONS
from planlift.rm_groups.schema import read_groups
from planlift.rubric_rm.inputs import encode_rm_input, pad_batch
from planlift.rubric_rm.model import build_reward_model

log = logging.getLogger("warmup_trace_lm")
TINY = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
}  # fmt: skip (conf/rm_backbone/tiny.yaml)


def encode(tokenizer, group: dict, full: bool) -> tuple[list[int], int]:
    """Ids of the positive and the index before which no target counts (the `<reasoning>` tag's end)."""
    reasoning = group["positive_pool"][0]["reasoning"]
    if not full:
        return tokenizer(reasoning.strip(), add_special_tokens=True)["input_ids"], 0
    ids = encode_rm_input(tokenizer, group["problem"], reasoning, "math", "math", 256)
    text = ""
    for index, token in enumerate(ids):
        text += tokenizer.decode([token])
        if text.endswith("<reasoning>"):
            return ids, index
    raise ValueError(f"{group['problem_id']}: no <reasoning> tag in the rendered input")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_groups", help="procedural TraceLift-Groups (train split)")
    parser.add_argument("out", help="directory for the exported backbone (an RM checkpoint)")
    parser.add_argument("--reasoning-steps", type=int, default=1000, help="phase 1 steps")
    parser.add_argument("--full-steps", type=int, default=1501, help="phase 2 steps")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runtime.quiet_libraries()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    groups = read_groups(args.train_groups, MATH_DIMENSIONS)
    model = build_reward_model(tiny=TINY, dimension_weights=[0.2] * 5, seed=args.seed)
    tokenizer = model.tokenizer
    embeddings = model.model.get_input_embeddings().weight
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    stream = random.Random(args.seed)
    for step in range(args.reasoning_steps + args.full_steps):
        encoded = [
            encode(tokenizer, g, step >= args.reasoning_steps) for g in stream.sample(groups, args.batch)
        ]
        ids, mask = pad_batch([e for e, _ in encoded], tokenizer.pad_token_id, "right")
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = hidden[:, :-1] @ embeddings.T
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        for row, (_, start) in enumerate(encoded):
            targets[row, :start] = -100
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 250 == 0:
            log.info(
                "step %d (%s) loss %.4f",
                step,
                "full" if step >= args.reasoning_steps else "reasoning",
                loss.item(),
            )
    model.save_pretrained(args.out)
    log.info("saved %s", args.out)


if __name__ == "__main__":
    main()
