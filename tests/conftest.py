"""Session-wide fixtures: one real vLLM server for every test that needs a model.

Set ``SCA_TEST_BASE_URL`` (and optionally ``SCA_TEST_MODEL``) to reuse a server you already
started with ``sca serve``; otherwise the fixture starts the embedded model once per session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class ServerHandle:
    base_url: str
    """OpenAI-compatible base URL, ending in ``/v1``."""
    model: str
    """The served model name."""

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")


@pytest.fixture(scope="session")
def vllm_server() -> Iterator[ServerHandle]:
    reuse = os.environ.get("SCA_TEST_BASE_URL")
    if reuse:
        yield ServerHandle(
            base_url=reuse.rstrip("/"), model=os.environ.get("SCA_TEST_MODEL", "smollm2")
        )
        return
    from safe_context_agent.serve import VLLMServer

    with VLLMServer() as server:
        yield ServerHandle(base_url=server.base_url, model=server.model)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public benchmark files beside the checkout (tests that read them skip without it)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data folder {SHARED_DATA} is not present")
    return SHARED_DATA
