"""Serve an executor checkpoint with vLLM's OpenAI-compatible server (for `executor=openai`).

    python -m planlift.executors.serve /path/to/checkpoint --port 8000 [-- <more vLLM server flags>]

Adds what our checkpoints need and then runs `vllm.entrypoints.openai.api_server` in this process:
`--served-model-name executor` (the name conf/executor/openai.yaml asks for), a tokenizer-only
directory for character-tokenizer checkpoints (see `planlift.executors.vllm`), and a plain chat
template (`system\\nuser` + the continued assistant prefill) when the tokenizer has none, so the chat API
renders prompts exactly like the completions API. (`vllm serve` refuses the CPU build's package metadata.)
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


def server_command(checkpoint: str, host: str, port: int, extra: list[str]) -> list[str]:
    from planlift.executors.vllm import standalone_tokenizer_dir
    from planlift.models.loading import load_tokenizer

    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        checkpoint,
        "--served-model-name",
        "executor",
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
    return command + extra


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    command = server_command(args.checkpoint, args.host, args.port, extra)
    print("serving:", " ".join(command), flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
