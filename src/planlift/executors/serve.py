"""Serve an executor checkpoint with vLLM's OpenAI-compatible server (for `executor=openai`), or the
planner's for its rollouts (`--rollouts`, for `rollout=vllm_server`).

    python -m planlift.executors.serve /path/to/checkpoint --port 8000 [-- <more vLLM server flags>]
    python -m planlift.executors.serve /path/to/planner --rollouts --port 8001

Adds what our checkpoints need and then runs `vllm.entrypoints.openai.api_server` in this process:
`--served-model-name executor` (the name conf/executor/openai.yaml asks for), a tokenizer-only
directory for character-tokenizer checkpoints (see `planlift.executors.vllm`), and a plain chat
template (`system\\nuser` + the continued assistant prefill) when the tokenizer has none, so the chat API
renders prompts exactly like the completions API. (`vllm serve` refuses the CPU build's package metadata.)

`--rollouts` serves the model as `planner` with the weight-loading worker extension and the development
endpoints the trainer calls (`VLLM_SERVER_DEV_MODE=1`: /collective_rpc, /reset_prefix_cache; a trusted
network only), log-probs after temperature (`processed_logprobs`), no sampling defaults from the
checkpoint's generation config, and float32 on a machine without CUDA (the CPU trainer's dtype; vLLM's
`auto` would run a float32 checkpoint in bfloat16 there) unless `--dtype` is given.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

PLAIN_CHAT_TEMPLATE = (
    "{%- for m in messages -%}{{ m['content'] }}{%- if m['role'] == 'system' -%}{{ '\\n' }}{%- endif -%}"
    "{%- endfor -%}"
)


def server_command(
    checkpoint: str, host: str, port: int, extra: list[str], rollouts: bool = False
) -> list[str]:
    from planlift.executors.vllm import standalone_tokenizer_dir
    from planlift.models.loading import load_tokenizer

    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        checkpoint,
        "--served-model-name",
        "planner" if rollouts else "executor",
        "--host",
        host,
        "--port",
        str(port),
    ]
    tokenizer_dir = standalone_tokenizer_dir(checkpoint)
    if tokenizer_dir is not None:
        command += ["--tokenizer", tokenizer_dir]
    if getattr(load_tokenizer(checkpoint), "chat_template", None) is None:
        template = Path(tempfile.mkdtemp(prefix="planlift-chat-")) / "plain.jinja"
        template.write_text(PLAIN_CHAT_TEMPLATE)
        command += ["--chat-template", str(template)]
    if "--generation-config" not in extra:
        # vLLM's own defaults: with "auto", a field a request leaves out comes from the checkpoint's
        # generation_config.json (Qwen2.5-Instruct: top_k 20, repetition_penalty 1.05), so the server would
        # sample unlike the HF and offline vLLM executors with the same config
        command += ["--generation-config", "vllm"]
    if rollouts:
        from planlift.grpo.vllm_engine import WORKER_EXTENSION

        command += [
            "--worker-extension-cls",
            WORKER_EXTENSION,
            "--logprobs-mode",
            "processed_logprobs",
        ]
        if "--dtype" not in extra and not _has_cuda():
            command += ["--dtype", "float32"]
    return command + extra


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--rollouts", action="store_true", help="serve the planner for rollout=vllm_server")
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    command = server_command(args.checkpoint, args.host, args.port, extra, rollouts=args.rollouts)
    if args.rollouts:
        os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # /collective_rpc and /reset_prefix_cache
    print("serving:", " ".join(command), flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
