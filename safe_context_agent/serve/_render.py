"""Token ids of a conversation exactly as the server renders it for the embedded model.

vLLM renders a chat request with the served chat template (``serve/templates``) through the
model's Hugging Face tokenizer and then tokenises the text; :class:`ChatRenderer` does the
same on the client, so demonstrations written without a server (``sca train synthesize``)
carry the ids the served model will see. tests/serve checks them against the server's own
``prompt_token_ids``.

The template takes one keyword: ``few_shot`` (default on) adds the example turns the base
135M model needs to call the tool at all; a model trained on consult demonstrations is served
without them (:data:`TRAINED_TEMPLATE_KWARGS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safe_context_agent.serve._embedded import embedded_chat_template, prepare_embedded_model
from safe_context_agent.serve._shipped import TRAINED_TEMPLATE_KWARGS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["END_OF_TURN", "TRAINED_TEMPLATE_KWARGS", "ChatRenderer"]

END_OF_TURN = "<|im_end|>"
"""The token that ends every turn of the embedded model (the one it emits to stop)."""


class ChatRenderer:
    """Render conversations to the served model's prompt and completion token ids."""

    def __init__(self, model_dir: str | Path | None = None) -> None:
        from transformers import AutoTokenizer

        folder = Path(model_dir) if model_dir is not None else prepare_embedded_model()
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(str(folder))
        self.template = embedded_chat_template()
        end_of_turn_id = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        assert isinstance(end_of_turn_id, int)  # one token in, one id out
        self.end_of_turn_id = end_of_turn_id

    def prompt_text(
        self,
        messages: Sequence[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        **template_kwargs: Any,
    ) -> str:
        """The rendered prompt, ending with the assistant turn's opening."""
        text = self.tokenizer.apply_chat_template(
            list(messages),
            tools=None if tools is None else list(tools),  # transformers takes dicts or callables
            chat_template=self.template,
            add_generation_prompt=True,
            tokenize=False,
            **template_kwargs,
        )
        assert isinstance(text, str)
        return text

    def prompt_ids(
        self,
        messages: Sequence[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        **template_kwargs: Any,
    ) -> list[int]:
        """The prompt ids vLLM reports as ``prompt_token_ids`` for the same request."""
        text = self.prompt_text(messages, tools, **template_kwargs)
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def completion_ids(self, text: str) -> list[int]:
        """The ids of an assistant turn whose text is ``text``, ending the turn as the model does."""
        return [*self.tokenizer.encode(text, add_special_tokens=False), self.end_of_turn_id]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))
