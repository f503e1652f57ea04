"""A group of one sample has zero advantage (issue 13): all such groups are an error before any
step, some a warning with the count."""

from __future__ import annotations

from typing import Any

import pytest
from safe_context_training import ReplaySet, ReplaySource, default_reward

from safe_context_agent.errors import ConfigError


def _replay(build: Any, sizes: list[int]) -> ReplaySet:
    parts = build.small_parts()
    traces = [
        build.direct(parts.prompt, [9, 2 + i], group=f"g{g}", index=i)
        for g, size in enumerate(sizes)
        for i in range(size)
    ]
    return ReplaySet.from_traces(traces)


def test_only_single_sample_groups_is_an_error(build: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        ReplaySource(_replay(build, [1, 1, 1]), default_reward())
    assert str(caught.value) == (
        "every group of the traces holds a single trajectory (3 groups): advantages are"
        " normalised within a group, so each is zero and training would change nothing; collect"
        " at least 2 samples per prompt (sca collect --n 2 or more)"
    )


def test_some_single_sample_groups_warn_with_the_count(build: Any) -> None:
    replay = _replay(build, [2, 1, 3, 1])
    with pytest.warns(UserWarning, match="2 of 4 groups hold a single trajectory"):
        ReplaySource(replay, default_reward())
    assert any("2 of 4 groups" in w for w in replay.report.warnings)


def test_no_warning_when_every_group_has_two_samples(build: Any, recwarn) -> None:
    ReplaySource(_replay(build, [2, 2]), default_reward())
    assert not [w for w in recwarn if "single trajectory" in str(w.message)]
