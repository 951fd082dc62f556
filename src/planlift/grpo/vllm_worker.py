"""Methods vLLM adds to its worker for `rollout=vllm` (`LLM(worker_extension_cls=...)`), called through
`LLM.collective_rpc` (colocated) or the server's `/collective_rpc` (`rollout=vllm_server`). Imported
inside vLLM's worker: keep this module free of planlift's heavy imports.

Weights go through the worker's own `reload_weights` (vLLM's in-place reload: each layer's weight loader,
then its post-processing again, e.g. the CPU backend's GEMM packing). Calling the model's `load_weights`
after start-up fails on the CPU build: post-processing replaced the parameters the loaders expect.
"""

from __future__ import annotations

import torch


class WeightLoader:
    """`self` is vLLM's worker. Names are Hugging Face's; vLLM fuses q/k/v and gate/up itself."""

    def load_planner_weights(self, weights: list[tuple[str, torch.Tensor]]) -> int:
        # a tied lm_head is re-packed from `lm_head.weight` only when it arrives after the embedding
        ordered = [w for w in weights if w[0] != "lm_head.weight"]
        ordered += [w for w in weights if w[0] == "lm_head.weight"]
        # outside inference mode even when called from Lightning's validation loop: parameters made there
        # would be inference tensors, which the next load may not update in place
        with torch.inference_mode(False), torch.no_grad():
            self.reload_weights(weights_iterator=iter(ordered), is_checkpoint_format=True)
        return len(ordered)

    def load_planner_weights_from_file(self, path: str) -> int:
        """The server's way in: HTTP passes strings only, so the trainer writes a safetensors file first."""
        from safetensors.torch import load_file

        return self.load_planner_weights(list(load_file(path).items()))
