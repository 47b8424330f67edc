"""The chan/1 error registry (SPEC.md §9, spec/errors.tsv) as exception classes.

Every NAME of the registry is one class, a subclass of :class:`ChanError` and of the
class of its scope (:class:`FatalError`, :class:`FrameError`, :class:`LocalError`).
A few also derive from the built-in exception a Python user already catches:
``ConnectionClosed`` is an :class:`EOFError` (as ``multiprocessing`` raises on a closed
pipe), ``Timeout`` a :class:`TimeoutError`, ``NoMemory`` a :class:`MemoryError`,
``System`` an :class:`OSError` (with ``.errno``) and ``InvalidArgument`` a
:class:`ValueError`.  ``tests/test_registry.py`` checks this table against
spec/errors.tsv.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Type

#: (code, NAME, section, scope) exactly as spec/errors.tsv lists them.
REGISTRY: Tuple[Tuple[int, str, str, str], ...] = (
    (1, "BAD_MAGIC", "5.2", "fatal"),
    (2, "UNSUPPORTED_VERSION", "5.2", "fatal"),
    (3, "PAYLOAD_TOO_LARGE", "8.1", "fatal"),
    (4, "TRUNCATED", "5.3", "fatal"),
    (5, "RESERVED_FIELD_NONZERO", "5.2", "frame"),
    (6, "HANDLE_LIMIT_EXCEEDED", "8.2", "frame"),
    (7, "TOO_FEW_HANDLES", "6.3", "frame"),
    (8, "TOO_MANY_HANDLES", "6.3", "frame"),
    (9, "MALFORMED", "7.3", "frame"),
    (10, "UNKNOWN_FIELD", "7.3", "frame"),
    (11, "NONCANONICAL", "7.2", "frame"),
    (12, "EMPTY_VALUE", "7.3", "frame"),
    (13, "DEPTH_EXCEEDED", "8.3", "frame"),
    (14, "INVALID_UTF8", "4.1", "frame"),
    (15, "DUPLICATE_KEY", "4.1", "frame"),
    (16, "UNKNOWN_HANDLE_KIND", "4.2", "frame"),
    (17, "WRONG_HANDLE_KIND", "4.2", "frame"),
    (18, "HANDLE_INDEX_OUT_OF_RANGE", "6.2", "frame"),
    (19, "HANDLE_INDEX_OUT_OF_ORDER", "6.2", "frame"),
    (20, "UNREFERENCED_HANDLE", "6.2", "frame"),
    (21, "HANDLES_TRUNCATED", "10.4", "fatal"),
    (22, "MISATTACHED_HANDLES", "10.3", "fatal"),
    (23, "SELF_SEND", "10.6", "local"),
    (24, "CONNECTION_CLOSED", "10.5", "fatal"),
    (25, "TIMEOUT", "11.2", "local"),
    (26, "WOULD_BLOCK", "11.2", "local"),
    (27, "NO_MEMORY", "11.3", "local"),
    (28, "SYSTEM", "11.3", "local"),
    (29, "INVALID_ARGUMENT", "11.3", "local"),
    (30, "BUFFER_TOO_SMALL", "11.3", "local"),
    (31, "INVALID_KEY", "4.1", "frame"),
    (32, "INVALID_JSON", "12.4", "local"),
    (33, "INVALID_TEXT", "12.4", "local"),
    (34, "NOT_FOUND", "11.3", "local"),
    (35, "WRONG_TYPE", "11.3", "local"),
    (36, "UNSUPPORTED_FEATURE", "16.2", "frame"),
    (37, "CHANNEL_CLOSED", "18.5", "local"),
    (38, "UNKNOWN_CHANNEL", "18.4", "frame"),
    (39, "CHANNEL_LIMIT_EXCEEDED", "18.6", "frame"),
    (40, "CHANNEL_NOT_TRANSFERABLE", "18.7", "local"),
)

#: The registry's ``receive`` and ``send`` columns (SPEC.md §9.1, §9.4): what an
#: error means when a receive (or decode) reports it, and when an encode or send
#: does.  ``-``: never raised there.  Exposed as ``cls.on_receive`` / ``cls.on_send``.
PATHS: Dict[str, Tuple[str, str]] = {
    "BAD_MAGIC": ("fatal", "-"), "UNSUPPORTED_VERSION": ("fatal", "-"),
    "PAYLOAD_TOO_LARGE": ("fatal", "local"), "TRUNCATED": ("fatal", "-"),
    "RESERVED_FIELD_NONZERO": ("frame", "-"), "HANDLE_LIMIT_EXCEEDED": ("frame", "local"),
    "TOO_FEW_HANDLES": ("frame", "-"), "TOO_MANY_HANDLES": ("frame", "-"), "MALFORMED": ("frame", "-"),
    "UNKNOWN_FIELD": ("frame", "-"), "NONCANONICAL": ("frame", "-"), "EMPTY_VALUE": ("frame", "local"),
    "DEPTH_EXCEEDED": ("frame", "local"), "INVALID_UTF8": ("frame", "local"),
    "DUPLICATE_KEY": ("frame", "local"), "UNKNOWN_HANDLE_KIND": ("frame", "local"),
    "WRONG_HANDLE_KIND": ("frame", "local"), "HANDLE_INDEX_OUT_OF_RANGE": ("frame", "-"),
    "HANDLE_INDEX_OUT_OF_ORDER": ("frame", "-"), "UNREFERENCED_HANDLE": ("frame", "-"),
    "HANDLES_TRUNCATED": ("fatal", "-"), "MISATTACHED_HANDLES": ("fatal", "-"),
    "SELF_SEND": ("frame", "local"), "CONNECTION_CLOSED": ("fatal", "sticky"),
    "TIMEOUT": ("local", "local"), "WOULD_BLOCK": ("local", "local"), "NO_MEMORY": ("local", "local"),
    "SYSTEM": ("local", "local/sticky"), "INVALID_ARGUMENT": ("local", "local"),
    "BUFFER_TOO_SMALL": ("-", "local"), "INVALID_KEY": ("frame", "local"), "INVALID_JSON": ("-", "-"),
    "INVALID_TEXT": ("-", "-"), "NOT_FOUND": ("-", "-"), "WRONG_TYPE": ("-", "-"),
    "UNSUPPORTED_FEATURE": ("frame/fatal", "local"), "CHANNEL_CLOSED": ("local", "local"),
    "UNKNOWN_CHANNEL": ("frame", "-"), "CHANNEL_LIMIT_EXCEEDED": ("frame/fatal", "local"),
    "CHANNEL_NOT_TRANSFERABLE": ("-", "local"),
}


class ChanError(Exception):
    """Base of every chan error.

    Attributes (class-level, also readable on instances):
      name  -- the registry NAME, e.g. ``"MALFORMED"``
      code  -- the registry code, e.g. ``9`` (libchan returns ``-code``)
      scope -- ``"fatal"``, ``"frame"`` or ``"local"`` as the registry assigns it;
               an instance may carry another scope where the spec says so
               (SELF_SEND found by a receiver is frame scope, SPEC.md §10.6).
    """

    name: str = "?"
    code: int = 0
    scope: str = "local"
    section: str = ""
    on_receive: str = "-"
    on_send: str = "-"
    #: True when the error is the code of an epitaph the peer sent (SPEC.md §17.3 rule 3).
    from_peer: bool = False
    #: The epitaph's message, when the peer sent one (``from_peer`` errors only).
    peer_message: Optional[str] = None

    def __init__(self, message: Optional[str] = None, *, scope: Optional[str] = None) -> None:
        super().__init__(message or self.name)
        if scope is not None:
            self.scope = scope

    def __str__(self) -> str:
        text = super().__str__()
        return text if text.startswith(self.name) else f"{self.name}: {text}"


class FatalError(ChanError):
    """Scope fatal: the connection is unusable and must be closed (SPEC.md §9.2).

    A connection remembers its first fatal receive error: every later ``recv``
    raises it again."""

    scope = "fatal"


class FrameError(ChanError):
    """Scope frame: one frame was rejected, its descriptors closed; the stream is in sync."""

    scope = "frame"


class LocalError(ChanError):
    """Scope local: raised by an API call before anything reached the wire."""

    scope = "local"


_SCOPE_BASE: Dict[str, Type[ChanError]] = {"fatal": FatalError, "frame": FrameError, "local": LocalError}

# Extra built-in bases, so that ordinary Python handlers catch the obvious cases.
_EXTRA_BASES: Dict[str, Tuple[type, ...]] = {
    "CONNECTION_CLOSED": (EOFError,),
    "TIMEOUT": (TimeoutError,),
    "NO_MEMORY": (MemoryError,),
    "SYSTEM": (OSError,),
    "INVALID_ARGUMENT": (ValueError,),
}

BY_NAME: Dict[str, Type[ChanError]] = {}
BY_CODE: Dict[int, Type[ChanError]] = {}


def _class_name(name: str) -> str:
    special = {"INVALID_UTF8": "InvalidUtf8", "INVALID_JSON": "InvalidJson"}
    if name in special:
        return special[name]
    return "".join(part.capitalize() for part in name.split("_"))


for _code, _name, _section, _scope in REGISTRY:
    _cls = type(
        _class_name(_name),
        (_SCOPE_BASE[_scope],) + _EXTRA_BASES.get(_name, ()),
        {
            "name": _name,
            "code": _code,
            "scope": _scope,
            "section": _section,
            "on_receive": PATHS[_name][0],
            "on_send": PATHS[_name][1],
            "__doc__": f"{_name} (code {_code}, scope {_scope}, SPEC.md §{_section}).",
            "__module__": "chan",
        },
    )
    BY_NAME[_name] = _cls
    BY_CODE[_code] = _cls
    globals()[_cls.__name__] = _cls


class UnknownError(FatalError):
    """An error code this binding cannot name (SPEC.md §14.2 item 1): the code of an
    epitaph from a peer of a later revision.  ``code`` is that code; ``name`` is
    ``"UNKNOWN"``.  Never success, never another error."""

    name = "UNKNOWN"

    def __init__(self, code: int, message: Optional[str] = None, *, scope: Optional[str] = None) -> None:
        self.code = code
        super().__init__(message or f"UNKNOWN: error code {code}", scope=scope)


UnknownError.__module__ = "chan"


def error_for_code(code: int, message: Optional[str] = None, *, scope: Optional[str] = None) -> ChanError:
    """A new exception for a registry code; an :class:`UnknownError` for a code the
    registry does not have."""
    cls = BY_CODE.get(code)
    if cls is None:
        return UnknownError(code, message, scope=scope)
    return cls(message, scope=scope)


def error(name: str, message: Optional[str] = None, *, scope: Optional[str] = None) -> ChanError:
    """A new exception instance for a registry NAME."""
    return BY_NAME[name](message, scope=scope)


def system_error(exc: OSError, what: str) -> ChanError:
    """SYSTEM for a failed system call, keeping its errno."""
    err = BY_NAME["SYSTEM"](f"{what}: {exc.strerror or exc}")
    err.errno = exc.errno  # type: ignore[attr-defined]
    return err


for _base in (ChanError, FatalError, FrameError, LocalError):
    _base.__module__ = "chan"


# Explicit names for type checkers (the loop above defines them at run time).
BadMagic: Type[FatalError] = BY_NAME["BAD_MAGIC"]  # type: ignore[assignment]
UnsupportedVersion: Type[FatalError] = BY_NAME["UNSUPPORTED_VERSION"]  # type: ignore[assignment]
PayloadTooLarge: Type[FatalError] = BY_NAME["PAYLOAD_TOO_LARGE"]  # type: ignore[assignment]
Truncated: Type[FatalError] = BY_NAME["TRUNCATED"]  # type: ignore[assignment]
ReservedFieldNonzero: Type[FrameError] = BY_NAME["RESERVED_FIELD_NONZERO"]  # type: ignore[assignment]
HandleLimitExceeded: Type[FrameError] = BY_NAME["HANDLE_LIMIT_EXCEEDED"]  # type: ignore[assignment]
TooFewHandles: Type[FrameError] = BY_NAME["TOO_FEW_HANDLES"]  # type: ignore[assignment]
TooManyHandles: Type[FrameError] = BY_NAME["TOO_MANY_HANDLES"]  # type: ignore[assignment]
Malformed: Type[FrameError] = BY_NAME["MALFORMED"]  # type: ignore[assignment]
UnknownField: Type[FrameError] = BY_NAME["UNKNOWN_FIELD"]  # type: ignore[assignment]
Noncanonical: Type[FrameError] = BY_NAME["NONCANONICAL"]  # type: ignore[assignment]
EmptyValue: Type[FrameError] = BY_NAME["EMPTY_VALUE"]  # type: ignore[assignment]
DepthExceeded: Type[FrameError] = BY_NAME["DEPTH_EXCEEDED"]  # type: ignore[assignment]
InvalidUtf8: Type[FrameError] = BY_NAME["INVALID_UTF8"]  # type: ignore[assignment]
DuplicateKey: Type[FrameError] = BY_NAME["DUPLICATE_KEY"]  # type: ignore[assignment]
UnknownHandleKind: Type[FrameError] = BY_NAME["UNKNOWN_HANDLE_KIND"]  # type: ignore[assignment]
WrongHandleKind: Type[FrameError] = BY_NAME["WRONG_HANDLE_KIND"]  # type: ignore[assignment]
HandleIndexOutOfRange: Type[FrameError] = BY_NAME["HANDLE_INDEX_OUT_OF_RANGE"]  # type: ignore[assignment]
HandleIndexOutOfOrder: Type[FrameError] = BY_NAME["HANDLE_INDEX_OUT_OF_ORDER"]  # type: ignore[assignment]
UnreferencedHandle: Type[FrameError] = BY_NAME["UNREFERENCED_HANDLE"]  # type: ignore[assignment]
HandlesTruncated: Type[FatalError] = BY_NAME["HANDLES_TRUNCATED"]  # type: ignore[assignment]
MisattachedHandles: Type[FatalError] = BY_NAME["MISATTACHED_HANDLES"]  # type: ignore[assignment]
SelfSend: Type[LocalError] = BY_NAME["SELF_SEND"]  # type: ignore[assignment]
ConnectionClosed: Type[FatalError] = BY_NAME["CONNECTION_CLOSED"]  # type: ignore[assignment]
Timeout: Type[LocalError] = BY_NAME["TIMEOUT"]  # type: ignore[assignment]
WouldBlock: Type[LocalError] = BY_NAME["WOULD_BLOCK"]  # type: ignore[assignment]
NoMemory: Type[LocalError] = BY_NAME["NO_MEMORY"]  # type: ignore[assignment]
System: Type[LocalError] = BY_NAME["SYSTEM"]  # type: ignore[assignment]
InvalidArgument: Type[LocalError] = BY_NAME["INVALID_ARGUMENT"]  # type: ignore[assignment]
BufferTooSmall: Type[LocalError] = BY_NAME["BUFFER_TOO_SMALL"]  # type: ignore[assignment]
InvalidKey: Type[FrameError] = BY_NAME["INVALID_KEY"]  # type: ignore[assignment]
InvalidJson: Type[LocalError] = BY_NAME["INVALID_JSON"]  # type: ignore[assignment]
InvalidText: Type[LocalError] = BY_NAME["INVALID_TEXT"]  # type: ignore[assignment]
NotFound: Type[LocalError] = BY_NAME["NOT_FOUND"]  # type: ignore[assignment]
WrongType: Type[LocalError] = BY_NAME["WRONG_TYPE"]  # type: ignore[assignment]
UnsupportedFeature: Type[FrameError] = BY_NAME["UNSUPPORTED_FEATURE"]  # type: ignore[assignment]
ChannelClosed: Type[LocalError] = BY_NAME["CHANNEL_CLOSED"]  # type: ignore[assignment]
UnknownChannel: Type[FrameError] = BY_NAME["UNKNOWN_CHANNEL"]  # type: ignore[assignment]
ChannelLimitExceeded: Type[FrameError] = BY_NAME["CHANNEL_LIMIT_EXCEEDED"]  # type: ignore[assignment]
ChannelNotTransferable: Type[LocalError] = BY_NAME["CHANNEL_NOT_TRANSFERABLE"]  # type: ignore[assignment]
