"""JSON as Celery's default serializer writes it (``kombu.utils.json``): datetime, date,
time, UUID, Decimal and bytes travel tagged as ``{"__type__": ..., "__value__": ...}``
and come back as themselves; any other type is a TypeError. Messages, results, meta
and call options all go through ``dumps`` and ``loads`` here.

Plain JSON pays nothing: ``dumps`` tags only after the plain encoder has refused a
value, and marks such a text with a leading space (still JSON, to any reader), so
``loads`` looks for tags only in a text that starts with one.
"""
from __future__ import annotations

import base64
import json
import uuid
from datetime import date, datetime, time
from decimal import Decimal

ENCODERS = (  # (type, tag, encode); datetime before date, which it subclasses
    (datetime, "datetime", datetime.isoformat),
    (date, "date", date.isoformat),
    (time, "time", time.isoformat),
    (Decimal, "decimal", str),
    (uuid.UUID, "uuid", lambda value: {"hex": value.hex}),
)
DECODERS = {
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "decimal": Decimal,
    "uuid": lambda value: uuid.UUID(**value),
    "bytes": str.encode,
    "base64": base64.b64decode,
}


def _tagged(value):
    """What plain JSON cannot write, in its tagged form; else TypeError."""
    reducer = getattr(value, "__json__", None)  # as kombu: an object may say how it travels
    if reducer is not None:
        return reducer()
    for kind, tag, encode in ENCODERS:
        if isinstance(value, kind):
            return {"__type__": tag, "__value__": encode(value)}
    if isinstance(value, bytes):
        try:
            return {"__type__": "bytes", "__value__": value.decode()}
        except UnicodeDecodeError:
            return {"__type__": "base64", "__value__": base64.b64encode(value).decode()}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _untagged(obj):
    """A decoded dict, or the value it tags; a dict that only looks like a tag stays one."""
    tag = obj.get("__type__")
    if len(obj) != 2 or "__value__" not in obj or not isinstance(tag, str):
        return obj
    decode = DECODERS.get(tag)
    try:
        return decode(obj["__value__"]) if decode else obj
    except (TypeError, ValueError, ArithmeticError):  # Decimal's errors are arithmetic
        return obj


_plain = json.JSONEncoder(separators=(",", ":")).encode
_typed = json.JSONEncoder(separators=(",", ":"), default=_tagged).encode


def dumps(value):
    """JSON text of value; TypeError for a type neither JSON nor the tags carry."""
    try:
        return _plain(value)
    except TypeError:
        return " " + _typed(value)


def loads(text):
    """The value of a JSON text, tagged values as themselves."""
    if text[:1] == " ":
        return json.loads(text, object_hook=_untagged)
    return json.loads(text)
