"""Online training: collect with the agent under the current adapter, score, update, hot-load.

Each step of :func:`run_online`:

1. collect ``num_generations`` runs for each of this step's prompts with the
   :class:`~safe_context_agent.SafeContextAgent`, against the running vLLM server, under the
   current policy (``AgentConfig(model=<adapter name>)``; the base model at step 0);
2. score them (the same reward terms as offline replay) and replay them token-exactly;
3. update the policy with :class:`IFPOTrainer` (GRPO or IFPO advantages);
4. save the LoRA adapter to ``<output_dir>/adapters/<prefix>_v<step>`` and hot-load it into the
   server under that name, so the next step samples from it.

Collection happens inside the trainer's batch preparation (:class:`OnlineSource`), so TRL's own
loop, checkpoints and resume work unchanged. Online training runs in one process: the rollouts
come from one server, and splitting a group across processes would split its advantages.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field
from safe_context_training._metrics import StepMetrics
from safe_context_training._options import DEFAULT_ONLINE_SAMPLING, OnlineOptions
from safe_context_training._replay import ReplayReport, ReplaySet, ReplayTrajectory
from safe_context_training._rewards import CombinedReward, default_reward, score_trajectories
from safe_context_training._trainer import IFPOConfig, IFPOTrainer, load_policy

from safe_context_agent import AgentConfig, SafeContextAgent
from safe_context_agent.errors import AgentRunError, ConfigError, ServeError
from safe_context_agent.eval import EvalPrompt, load_suite
from safe_context_agent.graph import Retriever, RunInput
from safe_context_agent.traces import JsonlTraceSink, MultiSink, Trace, TraceSink

__all__ = [
    "OnlineResult",
    "OnlineSource",
    "load_lora_adapter",
    "run_online",
    "unload_lora_adapter",
]

_DEFAULTS = OnlineOptions()


def _root(base_url: str) -> str:
    return base_url.rstrip("/").removesuffix("/v1")


def _served_adapters(root: str) -> dict[str, str | None]:
    """Served model name -> the folder it was loaded from (None for the base model)."""
    reply = httpx.get(f"{root}/v1/models", timeout=30.0)
    reply.raise_for_status()
    return {entry["id"]: entry.get("root") for entry in reply.json().get("data", [])}


def load_lora_adapter(
    base_url: str, name: str, path: str | os.PathLike[str], *, timeout_s: float = 120.0
) -> None:
    """Load the PEFT adapter folder ``path`` into the vLLM server at ``base_url`` as ``name``.

    Requests then select it with ``model=name``. Reloading a name from the same folder replaces
    it in place (a rerun into the same output folder); a name already taken by another folder
    raises, so two runs sharing a server cannot overwrite each other's policies.
    """
    root = _root(base_url)
    folder = str(Path(path).resolve())
    body: dict[str, Any] = {"lora_name": name, "lora_path": folder}
    try:
        reply = httpx.post(f"{root}/v1/load_lora_adapter", json=body, timeout=timeout_s)
        if reply.status_code == 400 and "already been loaded" in reply.text:
            if _served_adapters(root).get(name) != folder:
                raise ServeError(
                    f"{root}: a LoRA adapter named {name!r} is already served from another folder; "
                    "unload it (unload_lora_adapter) or choose another adapter prefix"
                )
            reply = httpx.post(
                f"{root}/v1/load_lora_adapter",
                json={**body, "load_inplace": True},
                timeout=timeout_s,
            )
    except httpx.HTTPError as exc:
        raise ServeError(
            f"{root}: cannot reach the vLLM server to load LoRA adapter {name!r} ({exc}); "
            "check that it runs (sca serve status)"
        ) from exc
    if reply.status_code != 200:
        # vLLM answers these endpoints in plain text, not JSON.
        raise ServeError(
            f"{root}: loading LoRA adapter {name!r} from {folder} failed (HTTP "
            f"{reply.status_code}: {reply.text.strip()[:300]}); serve with runtime LoRA enabled "
            "(sca serve without --no-lora) and a max LoRA rank at least the adapter's r"
        )


def unload_lora_adapter(base_url: str, name: str, *, timeout_s: float = 60.0) -> None:
    """Unload a LoRA adapter from the vLLM server (requests naming it then get HTTP 404)."""
    root = _root(base_url)
    try:
        reply = httpx.post(
            f"{root}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=timeout_s
        )
    except httpx.HTTPError as exc:
        raise ServeError(
            f"{root}: cannot reach the vLLM server to unload {name!r} ({exc})"
        ) from exc
    if reply.status_code != 200:
        raise ServeError(
            f"{root}: unloading LoRA adapter {name!r} failed (HTTP {reply.status_code}: "
            f"{reply.text.strip()[:300]})"
        )


class _Collected(TraceSink):
    """Keeps the traces of one collection in memory (beside the JSONL file)."""

    def __init__(self) -> None:
        self.traces: list[Trace] = []
        self._lock = threading.Lock()

    def write(self, trace: Trace) -> None:
        with self._lock:
            self.traces.append(trace)

    def close(self) -> None:
        return None


class OnlineSource:
    """A :class:`RolloutSource` that collects each batch with the agent under the current policy."""

    def __init__(
        self,
        prompts: Sequence[EvalPrompt],
        agent: AgentConfig,
        reward: CombinedReward,
        *,
        group_size: int,
        output_dir: Path,
        adapter_prefix: str = _DEFAULTS.adapter_prefix,
        max_concurrency: int = _DEFAULTS.max_concurrency,
        keep_loaded: int = _DEFAULTS.keep_loaded,
    ) -> None:
        if not prompts:
            raise ConfigError("online training needs at least one prompt")
        ids = [p.id for p in prompts]
        if len(set(ids)) != len(ids):
            raise ConfigError("prompt ids must be unique; give each prompt its own id")
        if keep_loaded < 1:
            raise ConfigError("keep_loaded must be at least 1 (the current policy)")
        self.prompts = {p.id: p for p in prompts}
        self.agent_config = agent
        self.reward = reward
        self.group_size = group_size
        self.output_dir = output_dir
        self.adapter_prefix = adapter_prefix
        self.max_concurrency = max_concurrency
        self.keep_loaded = keep_loaded
        self.base_url = self._endpoint(agent.base_url)
        self.traces_path = output_dir / "traces.jsonl"
        self.report = ReplayReport(sources=[str(self.traces_path)])
        self._file_sink = JsonlTraceSink(self.traces_path, fsync=False)
        self._policy = agent.model
        self._collected_by: str | None = None
        self._loaded: list[str] = []
        self._groups: dict[str, list[ReplayTrajectory]] = {}
        self._retriever: Retriever | None = None
        self._collections = 0

    @staticmethod
    def _endpoint(base_url: str | None) -> str:
        from safe_context_agent.serve import find_endpoint

        endpoint = find_endpoint(base_url)
        if endpoint is None:
            raise ServeError(
                "online training needs a running vLLM server with runtime LoRA: start one with "
                "sca serve, or pass AgentConfig(base_url=...) or set $SCA_BASE_URL"
            )
        return endpoint.base_url

    # -- RolloutSource ------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self.prompts)

    @property
    def max_group_size(self) -> int:
        return self.group_size

    @property
    def policy(self) -> str | None:
        """The policy that collected the latest batch (the next batch samples ``current``)."""
        return self._collected_by

    @property
    def current(self) -> str:
        """The served policy the next collection samples from."""
        return self._policy

    def resolve(self, keys: Sequence[str], copies: Sequence[int]) -> list[ReplayTrajectory | None]:
        self._collections += 1
        tag = f"c{self._collections}"
        distinct = list(dict.fromkeys(keys))
        self._groups = self._collect(distinct, tag)
        by_entry: dict[tuple[str, int], ReplayTrajectory] = {}
        for key in distinct:
            for trajectory in self._groups.get(f"{key}@{tag}", []):
                by_entry[(key, trajectory.trace.sample_index or 0)] = trajectory
        return [by_entry.get((key, copy)) for key, copy in zip(keys, copies, strict=True)]

    def group(self, group_id: str) -> Sequence[ReplayTrajectory]:
        return self._groups[group_id]

    def after_step(self, trainer: IFPOTrainer) -> None:
        name = f"{self.adapter_prefix}_v{trainer.state.global_step}"
        folder = self.output_dir / "adapters" / name
        model: Any = trainer.model  # a PeftModel: save_pretrained writes the adapter alone
        model.save_pretrained(str(folder))
        self.load(name, folder)

    # -- collection and serving ---------------------------------------------------------------
    def load(self, name: str, folder: Path) -> None:
        """Hot-load an adapter as the current policy; unload the ones beyond ``keep_loaded``."""
        load_lora_adapter(self.base_url, name, folder)
        self._policy = name
        self._loaded.append(name)
        while len(self._loaded) > self.keep_loaded:
            unload_lora_adapter(self.base_url, self._loaded.pop(0))

    def _collect(self, keys: Sequence[str], tag: str) -> dict[str, list[ReplayTrajectory]]:
        collected = _Collected()
        self._collected_by = self._policy
        config = self.agent_config.model_copy(
            update={"model": self._policy, "base_url": self.base_url}
        )
        agent = SafeContextAgent(
            config, sink=MultiSink([self._file_sink, collected]), retriever=self._retriever
        )
        if config.mode != "never" and self._retriever is None:
            self._retriever = agent.resources.retriever
        texts: list[str] = []
        runs: list[RunInput] = []
        for key in keys:
            prompt = self.prompts[key]
            metadata = {"label": prompt.label, "prompt_id": key, "policy": self._policy}
            if prompt.answer is not None:
                metadata["answer"] = prompt.answer
            for index in range(self.group_size):
                texts.append(prompt.prompt)
                runs.append(
                    {"group_id": f"{key}@{tag}", "sample_index": index, "metadata": metadata}
                )
        results = agent.batch(
            texts, runs=runs, max_concurrency=self.max_concurrency, return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, AgentRunError):
                raise failure
        replay = ReplaySet.from_traces(collected.traces)
        if not replay.groups:
            raise ServeError(
                f"all {len(texts)} runs of collection {tag} failed under policy {self._policy!r} "
                f"at {self.base_url}; first error: {failures[0] if failures else 'no trace'}"
            )
        score_trajectories(replay.trajectories(), self.reward)
        self._tally(replay.report)
        return {group.group_id: group.trajectories for group in replay.groups}

    def _tally(self, step: ReplayReport) -> None:
        for name in (
            "traces_read",
            "error_traces",
            "empty_traces",
            "groups",
            "trajectories",
            "concatenated",
            "per_turn",
            "samples",
            "model_tokens",
            "masked_tokens",
        ):
            setattr(self.report, name, getattr(self.report, name) + getattr(step, name))

    def close(self) -> None:
        self._file_sink.close()


class OnlineResult(BaseModel):
    """What an online run produced (also written to ``<output_dir>/online_result.json``)."""

    schema_version: Literal[1] = 1
    algo: str
    output_dir: str = Field(description="The final LoRA adapter.")
    policy: str = Field(description="The served name of the final adapter.")
    metrics_file: str
    traces_file: str
    steps: int
    collected: ReplayReport


def run_online(
    prompts: str | os.PathLike[str] | Sequence[EvalPrompt],
    args: IFPOConfig,
    *,
    agent: AgentConfig | None = None,
    reward: CombinedReward | None = None,
    model: str | os.PathLike[str] | None = None,
    adapter: str | os.PathLike[str] | None = None,
    adapter_prefix: str = _DEFAULTS.adapter_prefix,
    max_concurrency: int = _DEFAULTS.max_concurrency,
    keep_loaded: int = _DEFAULTS.keep_loaded,
    resume_from_checkpoint: str | bool | None = None,
    step_hooks: Sequence[Callable[[StepMetrics], None]] = (),
) -> OnlineResult:
    """Train online for ``args.max_steps`` steps against the running vLLM server.

    ``prompts`` is a file with ``prompt`` and ``label`` columns (optional ``answer``), read like
    ``load_suite("generic", path)``, or a list of :class:`EvalPrompt`. Each step collects
    ``args.num_generations`` runs for each of ``generation_batch_size / num_generations``
    prompts. ``adapter`` starts from an existing LoRA adapter (e.g. an SFT warm start), served as
    ``<prefix>_v0``. This is what ``sca train online`` runs; the GRPO-vs-IFPO experiment drives it
    with two ``args`` that differ only in ``algo``.
    """
    from accelerate import PartialState

    OnlineOptions(
        adapter_prefix=adapter_prefix, max_concurrency=max_concurrency, keep_loaded=keep_loaded
    )
    if PartialState().num_processes > 1:
        raise ConfigError(
            "online training runs in one process (rollouts come from one vLLM server); run it "
            "without accelerate launch, or train offline from collected traces on several GPUs"
        )
    if args.full_finetune:
        raise ConfigError(
            "online training hot-loads LoRA adapters into vLLM; full_finetune cannot be served "
            "that way. Drop full_finetune, or collect traces and train offline"
        )
    if args.max_steps is None or args.max_steps < 1:
        raise ConfigError("online training needs args.max_steps >= 1 (the number of updates)")
    if args.output_dir is None or args.num_generations is None:
        raise ConfigError("online training needs args.output_dir and args.num_generations set")
    items = (
        load_suite("generic", Path(prompts))
        if isinstance(prompts, str | os.PathLike)
        else list(prompts)
    )
    agent = agent or AgentConfig(sampling=DEFAULT_ONLINE_SAMPLING)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    source = OnlineSource(
        items,
        agent,
        reward or default_reward(),
        group_size=args.num_generations,
        output_dir=output_dir,
        adapter_prefix=adapter_prefix,
        max_concurrency=max_concurrency,
        keep_loaded=keep_loaded,
    )
    try:
        if adapter is not None:
            source.load(f"{adapter_prefix}_v0", Path(adapter))
        policy, tokenizer = load_policy(model, adapter=adapter)
        trainer = IFPOTrainer(
            policy, args, source=source, processing_class=tokenizer, step_hooks=step_hooks
        )
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        trainer.save_model(str(output_dir))
    finally:
        source.close()
    result = OnlineResult(
        algo=args.algo,
        output_dir=str(output_dir),
        policy=source.current,
        metrics_file=str(trainer.metrics_path),
        traces_file=str(source.traces_path),
        steps=trainer.state.global_step,
        collected=source.report,
    )
    (output_dir / "online_result.json").write_text(
        result.model_dump_json(indent=2), encoding="utf-8"
    )
    return result
