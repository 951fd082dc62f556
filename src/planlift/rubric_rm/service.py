"""The RM scoring service on the authors' contract (FastAPI; `python src/serve_rm.py` runs it with uvicorn).

    POST /score  {"items": [{"problem", "reasoning", "task_name", "task_type"}, ...],
                  "max_length": int (optional), "batch_size": int (optional)}
              -> {"scores": [float | null, ...]}      (null: that item's batch failed to score)
    GET  /health -> {"status": "ok", "model", "device", "requests", "items", "forwards", "failed_items"}

Requests are validated by pydantic: a missing or mistyped field is a 422 whose `detail[].loc` names it
(e.g. ["body", "items", 0, "reasoning"]). Each request is scored in batches of `batch_size` (capped by
the server's `max_batch_size`); one request scores at a time (a lock), so concurrent clients queue
instead of oversubscribing the device.
"""

from __future__ import annotations

import threading
import time

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from planlift.rm.learned import LearnedRM, RMInput
from planlift.rubric_rm.inputs import shortest_max_length


class ScoreItem(BaseModel):
    problem: str
    reasoning: str
    task_name: str
    task_type: str
    tests: str | None = None


class ScoreRequest(BaseModel):
    items: list[ScoreItem] = Field(max_length=100_000)
    max_length: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)


class ScoreResponse(BaseModel):
    scores: list[float | None]


def create_app(scorer: LearnedRM, max_batch_size: int = 64, max_length_limit: int = 8192) -> FastAPI:
    """The app around a loaded `LearnedRM` (its max_length / batch_size are the request defaults)."""
    app = FastAPI(title="planlift reasoning RM", version="1")
    lock = threading.Lock()
    app.state.requests = 0
    app.state.items = 0
    app.state.seconds = 0.0

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "model": scorer.path,
            "device": str(scorer.device),
            "requests": app.state.requests,
            "items": app.state.items,
            "forwards": scorer.forwards,
            "failed_items": scorer.failed_items,
        }

    @app.post("/score", response_model=ScoreResponse)
    def score(request: ScoreRequest) -> ScoreResponse:
        # a plain `def`: FastAPI runs it in its thread pool, so the event loop stays responsive
        inputs = [RMInput(i.problem, i.reasoning, i.task_name, i.task_type, i.tests) for i in request.items]
        max_length = min(request.max_length or scorer.max_length, max_length_limit)
        batch_size = min(request.batch_size or scorer.batch_size, max_batch_size)
        for task_name, task_type in {(i.task_name, i.task_type) for i in inputs}:
            shortest = shortest_max_length(scorer.tokenizer, task_name, task_type)
            if max_length < shortest:  # an input error of the request, not a failure of the server
                raise HTTPException(
                    422,
                    f"max_length={max_length} leaves no room for the reasoning: the input frame of "
                    f"{task_name} ({task_type}) takes {shortest - 1} tokens",
                )
        with lock:
            start = time.perf_counter()
            scores = scorer.score_inputs(inputs, max_length, batch_size) if inputs else []
            app.state.seconds += time.perf_counter() - start
        app.state.requests += 1
        app.state.items += len(inputs)
        return ScoreResponse(scores=scores)

    return app
