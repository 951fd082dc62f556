"""A scripted executor for unit tests of reward plumbing (never a proof that a model works)."""

from __future__ import annotations

from planlift.executors.base import Executor, ExecutorResult


class ScriptedExecutor(Executor):
    """Answers from a table keyed by the reasoning text (None = the no-reasoning prompt).

    `script[reasoning]` is a list of answers consumed cyclically per prompt; `fail` lists reasonings
    whose prompts fail.
    """

    def __init__(self, task, script, fail=()):
        super().__init__()
        self.task = task
        self.script = script
        self.fail = set(fail)
        self.calls = []

    def _generate(self, prompts, n, greedy):
        self.calls.append((len(prompts), n))
        results = []
        for prompt in prompts:
            reasoning = self._reasoning(prompt.user)
            if reasoning in self.fail:
                results.append(ExecutorResult(error="scripted failure"))
                continue
            answers = self.script[reasoning]
            results.append(ExecutorResult(texts=tuple(answers[i % len(answers)] for i in range(n))))
        return results

    @staticmethod
    def _reasoning(user):
        if "<reasoning>\n" not in user:
            return None
        return user.split("<reasoning>\n", 1)[1].split("</reasoning>", 1)[0]
