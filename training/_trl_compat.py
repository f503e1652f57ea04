"""Every use of TRL's private members, in one place: read from TRL 1.16.0's ``GRPOTrainer``.

``IFPOTrainer`` needs four things TRL has no public API for, all in
``trl/trainer/grpo_trainer.py`` of 1.16.0:

- the *generation batch* seam, ``_generate_and_score_completions(inputs)``: called once per
  generation batch in training (``_prepare_inputs`` then shuffles the returned dict and splits it
  into ``steps_per_generation`` micro-batches) and once per batch in evaluation; the place to
  lay a batch out and replace its advantages;
- the metrics buffer ``_metrics[mode][name]`` (a list per name, averaged at each log);
- the completions log ``_logs["advantages"]`` (a deque of ``generation_batch_size`` entries that
  ``log_completions`` prints), to which TRL appends its own GRPO advantages;
- the text tokenizer ``_tokenizer`` (the processing class, or its tokenizer for a processor).

And one log message: with a reward of ``None`` for every function (our filler slots), TRL warns
"All reward functions returned None" with the row's inputs in the text; the filter below matches
that text. Any other TRL version is refused by :func:`check_trl_version` with a clear message:
these members are private, so a new release may move them without notice.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, cast

import trl
from trl import GRPOTrainer

from safe_context_agent.errors import ConfigError

__all__ = [
    "TRL_VERSION_READ",
    "GRPOSeams",
    "check_trl_version",
    "rollout_func_allowed",
]

TRL_VERSION_READ = "1.16.0"
"""The TRL release whose private members this module was written against (pinned in pyproject)."""

_EXPERIMENTAL_SWITCH = "TRL_EXPERIMENTAL_SILENCE"
_GRPO_LOGGER = "trl.trainer.grpo_trainer"


def check_trl_version(installed: str | None = None) -> None:
    """Refuse a TRL release other than the 1.16 series, whose private members we use."""
    version = installed or trl.__version__
    if version.split(".")[:2] != TRL_VERSION_READ.split(".")[:2]:
        raise ConfigError(
            f"TRL {version} is installed, but IFPOTrainer was written against TRL "
            f"{TRL_VERSION_READ} (it uses GRPOTrainer internals that move between releases); "
            f"install trl=={TRL_VERSION_READ} (pip install 'safe-context-agent[train]')"
        )


@contextlib.contextmanager
def rollout_func_allowed() -> Iterator[None]:
    """Construct a ``rollout_func`` trainer without TRL's experimental-feature warning.

    TRL reads its own switch, ``TRL_EXPERIMENTAL_SILENCE=1``, when the trainer is built; we set it
    for that moment only (and restore what was there), so the user's other TRL code still warns.
    """
    before = os.environ.get(_EXPERIMENTAL_SWITCH)
    os.environ[_EXPERIMENTAL_SWITCH] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_EXPERIMENTAL_SWITCH, None)
        else:
            os.environ[_EXPERIMENTAL_SWITCH] = before


class _QuietFillers(logging.Filter):
    """Drop TRL's 'all reward functions returned None' warning when it is about a filler slot."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("All reward functions returned None" in message and self.marker in message)


class GRPOSeams(GRPOTrainer):
    """``GRPOTrainer`` with the private members ``IFPOTrainer`` uses, under public names.

    Subclasses override :meth:`generation_batch` (and call :meth:`trl_generation_batch` for
    TRL's own scoring) instead of TRL's private ``_generate_and_score_completions``.
    """

    def __init__(self, *args: Any, quiet_reward_marker: str | None = None, **kwargs: Any) -> None:
        check_trl_version()
        if quiet_reward_marker is not None:
            logger = logging.getLogger(_GRPO_LOGGER)
            if not any(
                isinstance(f, _QuietFillers) and f.marker == quiet_reward_marker
                for f in logger.filters
            ):
                logger.addFilter(_QuietFillers(quiet_reward_marker))
        with rollout_func_allowed():
            super().__init__(*args, **kwargs)

    # -- the generation-batch seam ------------------------------------------------------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        return self.generation_batch(inputs)

    def generation_batch(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """One generation batch (train) or evaluation batch, as the dict TRL's loss reads."""
        return self.trl_generation_batch(inputs)

    def trl_generation_batch(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """TRL's own generation and scoring of ``inputs`` (``rollout_func``, rewards, GRPO)."""
        return GRPOTrainer._generate_and_score_completions(self, inputs)

    # -- buffers ------------------------------------------------------------------------------
    @property
    def text_tokenizer(self) -> Any:
        """The tokenizer TRL pads with."""
        return self._tokenizer

    def metric_buffer(self, mode: str) -> dict[str, list[float]]:
        """The values logged (averaged) at the next log of ``mode`` ('train' or 'eval')."""
        return self._metrics[mode]

    def logged_advantages(self) -> list[float]:
        """The advantages of the completions log, oldest first (the last generation batch)."""
        return list(self._logs["advantages"])

    def replace_logged_advantages(self, advantages: Sequence[float]) -> None:
        """Put ``advantages`` (every process's, in TRL's row order) in place of the GRPO ones
        TRL logged for the same rows, so the completions log shows the advantages applied.

        TRL appends one value per row to a deque of ``generation_batch_size`` entries; when a
        batch holds more rows than that, only its last rows are kept, and so are ours.
        """
        logged = cast("deque[float]", self._logs["advantages"])
        values = [float(a) for a in advantages]
        kept = min(len(values), len(logged))
        for _ in range(kept):
            logged.pop()
        logged.extend(values[len(values) - kept :])
