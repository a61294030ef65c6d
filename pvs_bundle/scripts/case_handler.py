"""The per-case handler: an Ignite handler that takes each case of every batch, then finishes when the run does.

Evaluation's metrics, inference's writer and the prediction census all follow one pattern: forget the previous run
on ``STARTED``; on ``ITERATION_COMPLETED`` take every case of the batch just run (the batch and the engine's output
decollated into one dict per case, the output's keys over the batch's); on ``COMPLETED`` write what was gathered.
:class:`PerCaseHandler` is that pattern once; a subclass says what a case is (:meth:`PerCaseHandler.handle_case`),
what resetting means and what finishing writes (``__call__``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from ignite.engine import Engine, Events


def batch_cases(engine: Engine) -> list[dict[Hashable, Any]]:
    """The cases of the batch just run: each decollated batch item merged with its output (the output's keys win)."""
    outputs, batch = engine.state.output, engine.state.batch
    outputs = outputs if isinstance(outputs, list) else [outputs]
    batch = batch if isinstance(batch, list) else [batch]
    return [{**item_batch, **item_output} for item_batch, item_output in zip(batch, outputs, strict=True)]


class PerCaseHandler:
    """Base of the handlers that take one case at a time: reset on STARTED, each case, finish on COMPLETED.

    Subclasses implement :meth:`reset`, :meth:`handle_case` and ``__call__`` (called on ``COMPLETED``).
    """

    def attach(self, engine: Engine) -> None:
        """Register on the engine: reset on STARTED, every case on ITERATION_COMPLETED, finish on COMPLETED."""
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self)

    def reset(self, engine: Engine) -> None:
        """Forget the cases of a previous run."""
        raise NotImplementedError

    def iteration_completed(self, engine: Engine) -> None:
        """Hand every case of the batch just run to :meth:`handle_case`, in batch order."""
        for case in batch_cases(engine):
            self.handle_case(case)

    def handle_case(self, item: Mapping[Hashable, Any]) -> Any:
        """Take one case (its batch item merged with its output)."""
        raise NotImplementedError

    def __call__(self, engine: Engine) -> None:
        """Finish the run: write what the cases gave."""
        raise NotImplementedError
