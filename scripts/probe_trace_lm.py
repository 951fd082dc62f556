"""How well an RM backbone predicts the digits of correct procedural traces (a diagnostic).

Reads the positives of procedural TraceLift-Groups, renders them as the RM does, and reports the
teacher-forced next-token accuracy of the backbone (read out through its tied input embeddings, as the
`module.lm_weight` term trains it) at the three kinds of token a step line `S5=9+9=8` holds that the problem does not spell out:
operands (`9`, `9`: a lookup of earlier states), the operation (`+`: copied from the problem's
`S5=S4+S3`) and values (`8`: the mod-10 arithmetic of the line).

    python scripts/probe_trace_lm.py <run>/reward_model outputs/groups/procedural/dev.jsonl --limit 100
"""

from __future__ import annotations

import argparse
import json
from itertools import accumulate

import torch

from planlift import runtime
from planlift.rm_groups.schema import read_groups
from planlift.rubric_rm.inputs import encode_reasoning_only, encode_rm_input
from planlift.rubric_rm.model import RubricRewardModel


def digit_accuracy(
    model: RubricRewardModel, groups: list[dict], render: str = "full"
) -> dict[str, float | int]:
    tokenizer = model.tokenizer
    embeddings = model.model.get_input_embeddings().weight
    hits = {"operand": [], "op": [], "value": []}
    for group in groups:
        reasoning = group["positive_pool"][0]["reasoning"]
        if render == "reasoning":  # what stage 1 of the warm-up (rm_stage=lm_reasoning) trains on
            ids = encode_reasoning_only(tokenizer, reasoning, 1024)
        else:
            ids = encode_rm_input(tokenizer, group["problem"], reasoning, "math", group["task_type"], 1024)
        batch = torch.tensor([ids])
        with torch.no_grad():
            hidden = model.model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state[0]
        predicted = (hidden @ embeddings.T).argmax(-1).tolist()
        pieces = [tokenizer.decode([i]) for i in ids]
        ends = [len(text) for text in accumulate(pieces)]
        opened = "".join(pieces).rfind("<reasoning>") + len("<reasoning>")
        start = next(i for i, end in enumerate(ends) if end >= opened) + 1
        equals = 0
        for position in range(start, len(pieces)):
            piece = pieces[position]
            if piece == "\n":
                equals = 0
            elif piece == "=":
                equals += 1
            elif piece.isdigit() and equals in (1, 2):
                hits["operand" if equals == 1 else "value"].append(predicted[position - 1] == ids[position])
            elif piece in ("+", "-", "*", "/") and equals == 1:
                hits["op"].append(predicted[position - 1] == ids[position])
    return {
        **{f"{kind}_acc": sum(found) / max(len(found), 1) for kind, found in hits.items()},
        **{f"{kind}_digits": len(found) for kind, found in hits.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rm_path", help="an exported reward model (<run>/reward_model)")
    parser.add_argument("groups", help="procedural TraceLift-Groups JSONL")
    parser.add_argument("--limit", type=int, default=100, help="first N groups")
    parser.add_argument(
        "--render", choices=("full", "reasoning"), default="full", help="the RM input or the reasoning alone"
    )
    args = parser.parse_args()
    runtime.quiet_libraries()
    model = RubricRewardModel.from_pretrained(args.rm_path).eval()
    groups = read_groups(args.groups, model.dimension_names)[: args.limit]
    print(json.dumps(digit_accuracy(model, groups, args.render), indent=2))


if __name__ == "__main__":
    main()
