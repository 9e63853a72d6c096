"""Field mapping: which keys of a user's rows hold the id, the instruction and the response.

`data.fields` in config: `instruction=problem response=solution` (Magicoder), `input=input` (an
Alpaca-style input appended to the instruction under `### Input:`, as Alpaca's own prompt lays it
out; an empty input adds nothing), `messages=messages` (chat rows: the first `user` turn is the
instruction and the first `assistant` turn after it the response; later turns are ignored, so a
multi-turn row selects on its opening exchange). `id=null`, or an id key no row has, synthesises
ids from the row number (0-based pool position, as a string).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from codeselect.errors import UserError

# Alpaca's prompt puts a non-empty input after the instruction under its own heading.
ALPACA_INPUT = "{instruction}\n\n### Input:\n{input}"


@dataclass(frozen=True)
class Fields:
    """Where the three core values live in a row."""

    id: str | None = "id"
    instruction: str = "instruction"
    response: str = "response"
    input: str | None = None
    messages: str | None = None
    input_template: str = ALPACA_INPUT

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "Fields":
        """From the `data.fields` node (None or missing keys: the defaults)."""
        if cfg is None:
            return cls()
        opts = dict(cfg)
        unknown = sorted(set(opts) - set(cls.__dataclass_fields__))
        if unknown:
            raise UserError(f"unknown field {unknown[0]!r} (known: id, instruction, response, input, "
                            "messages, input_template)", key=f"data.fields.{unknown[0]}")
        for key in ("instruction", "response"):
            if key in opts and opts[key] is None and not opts.get("messages"):
                raise UserError("must name a key (or set data.fields.messages)", key=f"data.fields.{key}")
        clean = {k: (None if v is None else str(v)) for k, v in opts.items()}
        clean.setdefault("instruction", "instruction")
        clean.setdefault("response", "response")
        if clean.get("instruction") is None:
            clean["instruction"] = "instruction"
        if clean.get("response") is None:
            clean["response"] = "response"
        return cls(**clean)

    @property
    def is_default(self) -> bool:
        return self == Fields()

    def used_keys(self) -> list[str]:
        """The row keys this mapping reads (for column checks)."""
        if self.messages:
            keys = [self.messages]
        else:
            keys = [self.instruction, self.response] + ([self.input] if self.input else [])
        return keys + ([self.id] if self.id else [])


def _text(row: Mapping[str, Any], key: str, where: dict[str, Any]) -> str:
    if key not in row:
        raise UserError("missing required key", key=key, **where)
    value = row[key]
    if not isinstance(value, str):
        raise UserError(f"must be a string, got {type(value).__name__}", key=key, **where)
    return value


def _from_messages(row: Mapping[str, Any], key: str, where: dict[str, Any]) -> tuple[str, str]:
    if key not in row:
        raise UserError("missing required key", key=key, **where)
    turns = row[key]
    if not isinstance(turns, (list, tuple)):
        raise UserError(f"must be a list of {{role, content}} turns, got {type(turns).__name__}",
                        key=key, **where)
    instruction = response = None
    for j, turn in enumerate(turns):
        if not isinstance(turn, Mapping) or not isinstance(turn.get("role"), str) \
                or not isinstance(turn.get("content"), str):
            raise UserError(f"turn {j} is not a {{role: str, content: str}} object", key=key, **where)
        if instruction is None and turn["role"] == "user":
            instruction = turn["content"]
        elif instruction is not None and turn["role"] == "assistant":
            response = turn["content"]
            break
    if instruction is None:
        raise UserError("no 'user' turn", key=key, **where)
    if response is None:
        raise UserError("no 'assistant' turn after the first 'user' turn", key=key, **where)
    return instruction, response


def map_row(row: Any, fields: Fields, where: dict[str, Any], *, want_id: bool) -> tuple[Any, str, str]:
    """(id or None, instruction, response) of one row; UserError naming file, line/row and key."""
    if not isinstance(row, Mapping):
        raise UserError(f"expected a JSON object, got {type(row).__name__}", **where)
    if fields.messages:
        instruction, response = _from_messages(row, fields.messages, where)
    else:
        instruction = _text(row, fields.instruction, where)
        response = _text(row, fields.response, where)
        if fields.input:
            extra = row.get(fields.input)
            if extra is not None and not isinstance(extra, str):
                raise UserError(f"must be a string, got {type(extra).__name__}", key=fields.input, **where)
            if extra and extra.strip():
                instruction = fields.input_template.format(instruction=instruction, input=extra)
    rid = None
    if want_id:
        if fields.id not in row:
            raise UserError("missing required key (other rows have it)", key=str(fields.id), **where)
        rid = row[fields.id]
        if isinstance(rid, bool) or not isinstance(rid, (int, str)):
            raise UserError(f"must be an int or a string, got {type(rid).__name__}", key=str(fields.id), **where)
    return rid, instruction, response
