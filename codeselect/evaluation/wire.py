"""The one format values cross the sandbox boundary in: JSON with tags, exact builtin types only.

Both sides use this module (it is stdlib-only, so the sandboxed worker imports it by path). The
untrusted side `encode`s a function's output; the trusted side `decode`s it into fresh plain values
(built here, never by the untrusted process), so that no object the generated code made, and no
method it wrote (`__eq__`, `__hash__`, `__len__`, ...), ever reaches the comparison.

Encoding: `None`, `bool`, `str`, finite `float` and `int` are JSON values, `list` a JSON
array; every JSON object is a one-key tag: `{"i": hex}` an int too long for decimal JSON, `{"f": "nan"}` non-finite float,
`{"t": [...]}` tuple, `{"d": [[k, v], ...]}` dict, `{"s": [...]}` set, `{"fs": [...]}` frozenset,
`{"b": hex}` bytes, `{"ba": hex}` bytearray, `{"c": [re, im]}` complex, `{"np": dtype, "v": x}` a
numpy scalar, `{"nd": dtype, "shape": [...], "v": nested}` a numeric numpy array, `{"o": name}` a
value of any other type (`Opaque` on the trusted side: equal to nothing).
Accepted types are exact (`type(x) is int`), with three stdlib exceptions whose equality is the
base type's: `OrderedDict`/`defaultdict`/`Counter` travel as dicts and namedtuples as tuples
(evalplus compares with `==`, which gives the same answer for them). Any other subclass, e.g. an
`int` whose `__eq__` always answers True, travels as opaque and matches nothing.
"""
from __future__ import annotations

import json
import math
import sys
from typing import Any

SMALL_INT = 1 << 53
NP_DTYPES = frozenset(["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                       "uint64", "float16", "float32", "float64", "complex64", "complex128"])
_STD_DICTS = ("OrderedDict", "defaultdict", "Counter")


class WireError(ValueError):
    """Bytes that are not a well-formed encoded value."""


class Opaque:
    """A value the untrusted side could not (or would not) express in exact builtin types."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<opaque {self.type_name}>"


# ------------------------------------------------------------------------------------- encoding
_FLAT = frozenset([int, float, str, bool, type(None)])


_enc_fast = True


def _enc(x: Any) -> Any:
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if t is int:
        return x if -SMALL_INT < x < SMALL_INT else {"i": hex(x)}
    if t is float:
        return x if math.isfinite(x) else {"f": repr(x)}
    if t is list:
        if _enc_fast and all(type(v) in _FLAT for v in x):
            return x  # json writes it as is; a big int or a nan makes encode() retry slowly
        return [_enc(v) for v in x]
    if t is tuple:
        return {"t": [_enc(v) for v in x]}
    if t is dict:
        return {"d": [[_enc(k), _enc(v)] for k, v in x.items()]}
    if t is set:
        return {"s": [_enc(v) for v in x]}
    if t is frozenset:
        return {"fs": [_enc(v) for v in x]}
    if t is bytes:
        return {"b": x.hex()}
    if t is bytearray:
        return {"ba": bytes(x).hex()}
    if t is complex:
        return {"c": [_enc(x.real), _enc(x.imag)]}
    mod = getattr(t, "__module__", "")
    if mod == "collections" and t.__name__ in _STD_DICTS:
        return {"d": [[_enc(k), _enc(v)] for k, v in dict.items(x)]}
    if tuple in t.__bases__ and hasattr(t, "_fields") and hasattr(t, "_make") \
            and t.__eq__ is tuple.__eq__:  # a namedtuple
        return {"t": [_enc(v) for v in tuple.__iter__(x)]}
    np = sys.modules.get("numpy")
    if np is not None and mod == "numpy":
        if t is np.ndarray and x.dtype.name in NP_DTYPES:
            return {"nd": x.dtype.name, "shape": list(x.shape), "v": _enc(x.tolist())}
        if isinstance(x, np.generic) and type(x).__name__ in (x.dtype.name, x.dtype.type.__name__) \
                and x.dtype.name in NP_DTYPES:
            return {"np": x.dtype.name, "v": _enc(x.item())}
    return {"o": f"{mod}.{getattr(t, '__qualname__', '?')}"[:200]}


def encode(x: Any) -> str:
    """`x` as one line of JSON (no newline inside); values of other types become opaque."""
    global _enc_fast
    try:
        return json.dumps(_enc(x), allow_nan=False, separators=(",", ":"))
    except ValueError:  # a flat list held a nan or a huge int: element by element then
        try:
            _enc_fast = False
            return json.dumps(_enc(x), allow_nan=False, separators=(",", ":"))
        except (RecursionError, ValueError, TypeError, OverflowError, MemoryError):
            return '{"o":"unencodable"}'
        finally:
            _enc_fast = True
    except (RecursionError, TypeError, OverflowError, MemoryError):
        return '{"o":"unencodable"}'


# ------------------------------------------------------------------------------------- decoding
def _hashable(v: Any) -> Any:
    try:
        hash(v)
    except TypeError:
        raise WireError("unhashable set element or dict key") from None
    return v


def _dec(x: Any) -> Any:
    t = type(x)
    if x is None or t is bool or t is str or t is float:
        return x
    if t is int:  # json's parser already refused ints past Python's digit limit
        return x
    if t is list:
        if all(type(v) in _FLAT for v in x):  # json.loads made these objects: plain already
            return x
        return [_dec(v) for v in x]
    if t is not dict or len(x) not in (1, 2, 3):
        raise WireError(f"unexpected {t.__name__}")
    if len(x) == 1:
        (tag, v), = x.items()
        if tag == "t" and type(v) is list:
            return tuple(_dec(e) for e in v)
        if tag == "d" and type(v) is list:
            out = {}
            for kv in v:
                if type(kv) is not list or len(kv) != 2:
                    raise WireError("bad dict item")
                out[_hashable(_dec(kv[0]))] = _dec(kv[1])
            return out
        if tag in ("s", "fs") and type(v) is list:
            items = [_hashable(_dec(e)) for e in v]
            return set(items) if tag == "s" else frozenset(items)
        if tag == "i" and type(v) is str and len(v) <= 1 << 20:
            try:
                return int(v, 16)
            except ValueError:
                raise WireError("bad hex int") from None
        if tag == "f" and v in ("nan", "inf", "-inf"):
            return float(v)
        if tag in ("b", "ba") and type(v) is str:
            try:
                data = bytes.fromhex(v)
            except ValueError:
                raise WireError("bad hex bytes") from None
            return data if tag == "b" else bytearray(data)
        if tag == "c" and type(v) is list and len(v) == 2:
            re_, im = _dec(v[0]), _dec(v[1])
            if type(re_) is not float or type(im) is not float:
                raise WireError("bad complex")
            return complex(re_, im)
        if tag == "o" and type(v) is str:
            return Opaque(v)
        raise WireError(f"unknown tag {tag!r}")
    if set(x) == {"np", "v"} and x["np"] in NP_DTYPES:
        import numpy as np

        v = _dec(x["v"])
        if type(v) not in (bool, int, float, complex):
            raise WireError("bad numpy scalar")
        try:
            return np.array(v, dtype=x["np"])[()]
        except (OverflowError, ValueError, TypeError):
            raise WireError("numpy scalar out of range") from None
    if set(x) == {"nd", "shape", "v"} and x["nd"] in NP_DTYPES and type(x["shape"]) is list:
        import numpy as np

        shape = x["shape"]
        if not all(type(s) is int and 0 <= s for s in shape) or math.prod(shape) > 1 << 26:
            raise WireError("bad array shape")
        try:
            arr = np.array(_dec(x["v"]), dtype=x["nd"])
        except (OverflowError, ValueError, TypeError):
            raise WireError("bad array data") from None
        if list(arr.shape) != shape:
            raise WireError("array data does not match its shape")
        return arr
    raise WireError("unknown tag")


def decode(text: str | bytes) -> Any:
    """Fresh plain values from one encoded line; raises WireError on anything malformed."""
    try:
        return _dec(json.loads(text, parse_constant=_no_constant))
    except WireError:
        raise
    except (RecursionError, ValueError, TypeError, MemoryError) as exc:
        raise WireError(f"malformed value ({type(exc).__name__})") from None


def _no_constant(name: str) -> Any:
    raise WireError(f"bare {name} is not allowed")
