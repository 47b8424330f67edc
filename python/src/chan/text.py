"""The chan/1 text form (SPEC.md §12): strict JSON for values, for people and tools.

``dumps(value)`` renders the canonical compact form (``pretty=True``: 2-space
indentation, like ``jq .``); ``loads(text)`` parses it back.  Handles render as
``{"$fd":INDEX}`` / ``{"$conn":INDEX}`` with their table index (the k-th handle
met depth-first has index k) and parse back as :class:`chan.Handle` objects.
Channel handles (revision 1.1, SPEC.md §18.2 rule 3) render as ``{"$channel":ID}``
and parse back as :class:`chan.Channel` objects.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, Dict, List, Optional, Tuple

from ._codec import HARD_MAX_DEPTH, HARD_MAX_HANDLES, KIND_CHANNEL, KIND_CONN, KIND_FD, MAX_CHANNEL_ID, Channel, Handle
from ._errors import error

_MAX_SAFE = (1 << 53) - 1
_INT_RE = re.compile(r"-?(0|[1-9][0-9]*)\Z")
_MARKERS = ("$int", "$float", "$bytes", "$fd", "$conn", "$channel")


def _float_text(x: float) -> str:
    """Shortest round-trip decimal laid out as ECMAScript Number::toString, with
    '.0' appended when that has neither '.' nor 'e'."""
    if x == 0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    r = repr(abs(x))  # shortest round-trip digits (Python >= 3.1)
    mant, _, exp = r.partition("e")
    e = int(exp) if exp else 0
    if "." in mant:
        ip, fp = mant.split(".")
    else:
        ip, fp = mant, ""
    digits = (ip + fp).lstrip("0")
    # value = 0.digits... : position of the decimal point relative to digits
    lead_zeros = len(ip + fp) - len((ip + fp).lstrip("0"))
    n = len(ip) + e - lead_zeros  # ECMAScript n: value = 0.d1d2... * 10^n
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        s = digits + "0" * (n - k)
    elif 0 < n <= 21:
        s = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        s = "0." + "0" * (-n) + digits
    else:
        ee = n - 1
        sign = "+" if ee >= 0 else "-"
        s = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + sign + str(abs(ee))
    if "." not in s and "e" not in s:
        s += ".0"
    return ("-" if x < 0 else "") + s


def _str_text(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


class _Render:
    def __init__(self, pretty: bool) -> None:
        self.pretty = pretty
        self.handles = 0

    def render(self, v: Any, ind: int) -> str:
        t = type(v)
        pretty = self.pretty
        if v is None:
            return "null"
        if t is bool:
            return "true" if v else "false"
        if t is int:
            if -_MAX_SAFE <= v <= _MAX_SAFE:
                return str(v)
            return self.obj([('"$int"', '"%d"' % v)], ind)
        if t is float:
            if v != v:
                return self.obj([('"$float"', '"NaN"')], ind)
            if math.isinf(v):
                return self.obj([('"$float"', '"Infinity"' if v > 0 else '"-Infinity"')], ind)
            return _float_text(v)
        if t is str:
            return _str_text(v)
        if t is bytes or t is bytearray or t is memoryview:
            return self.obj([('"$bytes"', '"%s"' % base64.b64encode(bytes(v)).decode("ascii"))], ind)
        if t is list or t is tuple:
            if not v:
                return "[]"
            items = [self.render(x, ind + 1) for x in v]
            if pretty:
                pad = "  " * (ind + 1)
                return "[\n" + ",\n".join(pad + x for x in items) + "\n" + "  " * ind + "]"
            return "[" + ",".join(items) + "]"
        if t is dict:
            if not v:
                return "{}"
            members: List[Tuple[str, str]] = []
            for k, x in v.items():
                if not isinstance(k, str):
                    raise error("INVALID_ARGUMENT", "map keys must be str")
                key = "$" + k if k.startswith("$") else k
                members.append((_str_text(key), self.render(x, ind + 1)))
            return self.obj(members, ind)
        kind = getattr(v, "_chan_kind", None)
        if kind is None and hasattr(v, "fileno"):
            kind = KIND_FD
        if kind == KIND_CHANNEL:
            cid = v.id
            if type(cid) is not int:
                raise error("INVALID_ARGUMENT", "a channel endpoint whose handle was not sent has no id")
            return self.obj([('"$channel"', str(cid))], ind)
        if kind is not None:
            i = self.handles
            self.handles += 1
            return self.obj([('"$%s"' % ("conn" if kind == KIND_CONN else "fd"), str(i))], ind)
        if isinstance(v, bool):
            return self.render(bool(v), ind)
        if isinstance(v, int):
            return self.render(int(v), ind)
        if isinstance(v, float):
            return self.render(float(v), ind)
        if isinstance(v, str):
            return self.render(str(v), ind)
        if isinstance(v, dict):
            return self.render(dict(v), ind)
        if isinstance(v, (list, tuple)):
            return self.render(list(v), ind)
        raise error("INVALID_ARGUMENT", f"cannot render a {t.__name__}")

    def obj(self, members: List[Tuple[str, str]], ind: int) -> str:
        if self.pretty:
            pad = "  " * (ind + 1)
            return "{\n" + ",\n".join(f"{pad}{k}: {x}" for k, x in members) + "\n" + "  " * ind + "}"
        return "{" + ",".join(f"{k}:{x}" for k, x in members) + "}"


def dumps(value: Any, *, pretty: bool = False) -> str:
    """The text form of value (canonical compact rendering unless pretty)."""
    return _Render(pretty).render(value, 0)


class _Raw:
    """A parsed JSON object before marker resolution: its members in order."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: List[Tuple[str, Any]]) -> None:
        self.pairs = pairs


def _pairs_hook(pairs: List[Tuple[str, Any]]) -> Any:
    # Duplicates are found by the walk (_resolve), in document order, after the
    # whole document has been parsed: INVALID_JSON wins (SPEC.md §12.4 rule 4).
    return _Raw(pairs)


_TOKEN = re.compile(r"""[ \t\n\r]*(?:([\[{])|([\]}])|(,)|(:)|("(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*")"""
                    r"""|(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null))""")


def _syntax_error(text: str, pos: int = 0) -> Optional[str]:
    """Why text[pos:] does not start with one JSON value, or None: RFC 8259's
    grammar without recursion, for documents too deep for the json module."""
    stack: List[str] = []
    want = "value"  # value, value_or_close, key, key_or_close, colon, comma_or_close
    while True:
        m = _TOKEN.match(text, pos)
        if not m:
            if pos >= len(text.rstrip(_WS)):
                return "the input ends inside the value"
            return f"offset {pos}: not a JSON token"
        pos = m.end()
        opened, closed, comma, colon, string, scalar = m.groups()
        if want in ("value", "value_or_close") and (opened or string or scalar):
            if opened:
                stack.append(opened)
                want = "value_or_close" if opened == "[" else "key_or_close"
                continue
        elif want in ("key", "key_or_close") and string:
            want = "colon"
            continue
        elif want == "colon" and colon:
            want = "value"
            continue
        elif want == "comma_or_close" and comma:
            want = "value" if stack[-1] == "[" else "key"
            continue
        elif want in ("value_or_close", "key_or_close", "comma_or_close") and closed \
                and closed == ("]" if stack[-1] == "[" else "}"):
            stack.pop()
        else:
            return f"offset {m.start(m.lastindex or 0)}: unexpected {m.group(m.lastindex or 0)!r}"
        if not stack:
            return None
        want = "comma_or_close"


def _bad_constant(name: str) -> Any:
    raise error("INVALID_JSON", f"{name} is not JSON; write {{\"$float\":\"{name}\"}}")


def _check_str(s: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise error("INVALID_UTF8", "text form string is not Unicode: invalid UTF-8, or a lone "
                    "surrogate escape such as \\ud800") from None
    return s


def _resolve(v: Any, depth: int = 1) -> Any:
    t = type(v)
    if t is str:
        return _check_str(v)
    if t is int:
        if v < -(1 << 63) or v >= (1 << 63):
            raise error("INVALID_TEXT", f"integer {v} does not fit in 64 bits")
        return v
    if t is list:
        if v and depth >= HARD_MAX_DEPTH:
            raise error("DEPTH_EXCEEDED", f"values nest deeper than {HARD_MAX_DEPTH}", scope="local")
        return [_resolve(x, depth + 1) for x in v]
    if t is _Raw:
        pairs = v.pairs
        if len(pairs) == 1 and pairs[0][0] in _MARKERS:
            return _marker(pairs[0][0], pairs[0][1])
        if pairs and depth >= HARD_MAX_DEPTH:
            raise error("DEPTH_EXCEEDED", f"values nest deeper than {HARD_MAX_DEPTH}", scope="local")
        out: Dict[str, Any] = {}
        for k, x in pairs:
            if k.startswith("$"):
                if not k.startswith("$$"):
                    raise error("INVALID_TEXT", f"key {k!r} starts with '$' but is not a marker")
                k = k[1:]
            if k in out:
                raise error("DUPLICATE_KEY", f"text form object repeats the key {k!r}")
            if "\x00" in k:
                raise error("INVALID_KEY", "a map key cannot contain U+0000")
            out[_check_str(k)] = _resolve(x, depth + 1)
        return out
    if t is float and math.isinf(v):
        raise error("INVALID_TEXT", "a JSON number that rounds to infinity; write {\"$float\":\"Infinity\"}")
    return v  # None, bool, float


def _marker(key: str, arg: Any) -> Any:
    if key == "$int":
        if type(arg) is str and _INT_RE.match(arg) and arg != "-0":
            v = int(arg)
            if -(1 << 63) <= v < (1 << 63):
                return v
        raise error("INVALID_TEXT", f"bad $int {arg!r}")
    if key == "$float":
        if arg == "NaN":
            return math.nan
        if arg == "Infinity":
            return math.inf
        if arg == "-Infinity":
            return -math.inf
        raise error("INVALID_TEXT", f"bad $float {arg!r}")
    if key == "$bytes":
        if type(arg) is str:
            try:
                raw = base64.b64decode(arg.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError, ValueError):
                raw = None
            # padded, and the unused bits of the last symbol zero: only the canonical form
            if raw is not None and base64.b64encode(raw).decode("ascii") == arg:
                return raw
        raise error("INVALID_TEXT", f"bad $bytes {arg!r}")
    if key == "$channel":
        # SPEC.md §18.2 rule 3: a bare JSON int (as $fd: -0 is 0, floats are not ids)
        if type(arg) is int and 1 <= arg <= MAX_CHANNEL_ID:
            return Channel(arg)
        raise error("INVALID_TEXT", f"bad $channel {arg!r}: an id is an int in 1..{MAX_CHANNEL_ID}")
    # $fd / $conn
    if type(arg) is int and arg >= 0:
        return Handle(KIND_FD if key == "$fd" else KIND_CONN, arg)
    raise error("INVALID_TEXT", f"bad {key} {arg!r}")


def _check_indices(v: Any, state: List[int], count: int) -> None:
    """SPEC.md §12.1 rule 5 / §6.2: the k-th marker in walk order has index k."""
    t = type(v)
    if t is list:
        for x in v:
            _check_indices(x, state, count)
    elif t is dict:
        for x in v.values():
            _check_indices(x, state, count)
    elif t is Handle:
        if v.index >= count:
            raise error("HANDLE_INDEX_OUT_OF_RANGE", f"handle index {v.index} >= handle count {count}")
        if v.index <= state[0]:
            raise error("HANDLE_INDEX_OUT_OF_ORDER", f"handle index {v.index} after {state[0]}")
        state[0] = v.index
        state[1] += 1


def _count_markers(v: Any) -> int:
    t = type(v)
    if t is list:
        return sum(_count_markers(x) for x in v)
    if t is dict:
        return sum(_count_markers(x) for x in v.values())
    return 1 if t is Handle else 0


def loads(text: Any, *, handle_count: Any = None, check_handles: bool = True) -> Any:
    """Parse the text form (str or UTF-8 bytes).  Handles become :class:`Handle`.

    With check_handles (the default) the markers' indices are checked as in
    SPEC.md §6.2 against handle_count (default: the number of markers):
    HANDLE_INDEX_OUT_OF_RANGE, HANDLE_INDEX_OUT_OF_ORDER, UNREFERENCED_HANDLE."""
    value = _loads(text)
    return _finish(value, handle_count, check_handles)


def _finish(value: Any, handle_count: Any, check_handles: bool) -> Any:
    markers = _count_markers(value)
    if markers > HARD_MAX_HANDLES:
        raise error("HANDLE_LIMIT_EXCEEDED", f"{markers} handle markers: more than {HARD_MAX_HANDLES}",
                    scope="local")
    if check_handles:
        count = markers if handle_count is None else handle_count
        state = [-1, 0]
        _check_indices(value, state, count)
        if state[1] < count:
            raise error("UNREFERENCED_HANDLE", f"{count - state[1]} of {count} handles are never referenced")
    return value


def _loads(text: Any) -> Any:
    text = _text(text)
    try:
        raw = json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_bad_constant)
    except RecursionError:
        _deep(text, 0)
    except ValueError as exc:
        if hasattr(exc, "name"):
            raise
        raise error("INVALID_JSON", f"not JSON: {exc}") from None
    return _resolve(raw)


_WS = " \t\n\r"


def _text(text: Any) -> str:
    # Invalid UTF-8 becomes lone surrogates (surrogateescape), which the walk
    # reports as INVALID_UTF8 in document order, after the syntax check.
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text).decode("utf-8", errors="surrogateescape")
    return str(text)


def _deep(text: str, pos: int) -> None:
    """The json module gave up on nesting: JSON or not, first (§12.4 rule 4)."""
    why = _syntax_error(text, pos)
    if why is not None:
        raise error("INVALID_JSON", f"not JSON: {why}") from None
    raise error("DEPTH_EXCEEDED", f"values nest deeper than {HARD_MAX_DEPTH}", scope="local") from None


def iter_loads(text: Any, *, check_handles: bool = True) -> Any:
    """The documents of a text-form stream (SPEC.md §12.4 rule 6), one after another:
    separated by JSON whitespace; a number, true, false or null must be followed by
    whitespace or the end (``1 2`` is two documents, ``1"a"`` is rejected)."""
    text = _text(text)
    dec = json.JSONDecoder(object_pairs_hook=_pairs_hook, parse_constant=_bad_constant)
    pos = 0
    n = len(text)
    while True:
        while pos < n and text[pos] in _WS:
            pos += 1
        if pos >= n:
            return
        try:
            raw, end = dec.raw_decode(text, pos)
        except RecursionError:
            _deep(text, pos)
            raise  # not reached: _deep always raises
        except ValueError as exc:
            if hasattr(exc, "name"):
                raise
            raise error("INVALID_JSON", f"not JSON: {exc}") from None
        if end < n and text[end] not in _WS and text[pos] not in "[{\"":
            raise error("INVALID_JSON", f"a scalar document must be followed by whitespace (offset {end})")
        pos = end
        yield _finish(_resolve(raw), None, check_handles)
