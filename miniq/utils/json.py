"""JSON as Celery's default serializer writes it (``kombu.utils.json``): datetime, date,
time, UUID, Decimal and bytes travel tagged as ``{"__type__": ..., "__value__": ...}``
and come back as themselves; any other type is a TypeError. Messages, results, meta
and call options all go through ``dumps`` and ``loads`` here.

Plain JSON pays nothing: ``dumps`` tags only after the plain encoder has refused a
value (or where a dict looks like a tag), and marks such a text with a leading space
(still JSON, to any reader), so ``loads`` looks for tags only in a text that starts
with one.
"""
from __future__ import annotations

import base64
import json
import sys
import uuid
from datetime import date, datetime, time
from decimal import Decimal

TYPES = {  # tag: (type, encode, decode), tried in this order: datetime before date
    "datetime": (datetime, datetime.isoformat, datetime.fromisoformat),
    "date": (date, date.isoformat, date.fromisoformat),
    "time": (time, time.isoformat, time.fromisoformat),
    "decimal": (Decimal, str, Decimal),
    "uuid": (uuid.UUID, lambda value: {"hex": value.hex}, lambda value: uuid.UUID(**value)),
    "bytes": (bytes, bytes.decode, str.encode),
    "base64": (bytes, lambda value: base64.b64encode(value).decode(), base64.b64decode),
}


def _tagged(value):
    """What plain JSON cannot write: an object's own ``__json__()`` or Django's lazy text
    (as kombu's), else its tagged form; else TypeError."""
    if callable(getattr(value, "__json__", None)):
        return value.__json__()
    lazy = sys.modules.get("django.utils.functional")  # as kombu's: Django's lazy text is text
    if lazy is not None and isinstance(value, lazy.Promise):
        return str(value)
    for tag, (kind, encode, _) in TYPES.items():
        if isinstance(value, kind):
            try:
                return {"__type__": tag, "__value__": encode(value)}
            except UnicodeDecodeError:  # bytes that are not UTF-8 text: base64, next
                continue
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _untagged(obj):
    """A decoded dict, or the value it tags; a dict that only looks like a tag stays one."""
    if len(obj) != 2 or "__value__" not in obj:
        return obj
    try:
        return TYPES[obj.get("__type__")][2](obj["__value__"])
    except (KeyError, TypeError, ValueError, ArithmeticError):  # Decimal's are arithmetic
        return obj


_plain = json.JSONEncoder(separators=(",", ":")).encode
_typed = json.JSONEncoder(separators=(",", ":"), default=_tagged).encode


def dumps(value):
    """JSON text of value; TypeError for a type neither JSON nor the tags carry."""
    try:
        text = _plain(value)
    except TypeError:
        return " " + _typed(value)
    # a dict shaped as a tag is read as one, as Celery's reads it
    return " " + text if '"__value__"' in text else text


def loads(text):
    """The value of a JSON text, tagged values as themselves."""
    if text[:1] == " ":
        return json.loads(text, object_hook=_untagged)
    return json.loads(text)
