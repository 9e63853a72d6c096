"""The paper's prompt format, as a chat template so that base models and chat models share one path.

    <bos>You are a helpful programming assistant.
    ### Instruction:
    {instruction}
    ### Response:
    {response}<eos>
"""
from __future__ import annotations

from typing import Any

SYSTEM_PROMPT = "You are a helpful programming assistant."

# Jinja chat template (transformers `apply_chat_template`). A missing system message gets the default.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] != 'system' %}" + SYSTEM_PROMPT + "\n{% endif %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n"
    "{% elif m['role'] == 'user' %}### Instruction:\n{{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}### Response:\n{{ m['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### Response:\n{% endif %}"
)


def messages(instruction: str, response: str | None = None) -> list[dict[str, str]]:
    """Chat messages for one sample (the response is omitted for a generation prompt)."""
    out = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": instruction}]
    if response is not None:
        out.append({"role": "assistant", "content": response})
    return out


def prompt_text(instruction: str, bos: str = "") -> str:
    """The prompt up to and including `### Response:\\n`, without the chat template machinery."""
    return f"{bos}{SYSTEM_PROMPT}\n### Instruction:\n{instruction}\n### Response:\n"


def ensure_chat_template(tokenizer: Any) -> Any:
    """Give a tokenizer without a chat template (a base model's) the paper's template."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
