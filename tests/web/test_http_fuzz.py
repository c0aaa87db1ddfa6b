"""Property-based fuzzing of both POST endpoints, through the real app in process.

Hypothesis throws random JSON documents (deep nesting, huge strings, wrong types,
lone surrogates escaped in JSON, NaN), random and bit-flipped bytes, valid payloads
with one field corrupted, valid multi-message payloads and signature variants at
``POST /webhooks/whatsapp`` and ``POST /v1/messages`` of an app whose engine
delivers to a ``Collector`` on a real Redis. Properties:

- never a 500 (or an exception out of the app): only the statuses the contract names;
- a refused request stores nothing (no partial append): the dedupe index and the
  rejected store do not grow, and none of its messages is ever delivered;
- WhatsApp is tolerant: 400 only for a body that is not a JSON object (bad bytes, bad
  JSON, NaN, or nesting beyond what the JSON parser reads); any signed JSON object is
  answered 200 (413 above 1000 messages) once everything in it is stored;
- no WhatsApp message is lost: each one whose envelope (entry, change, value) still
  leads to it and whose identity (id, sender, group) is as sent is either stored in
  its chat (``wa:<phone_number_id>:<sender>`` or ``wa:<phone_number_id>:g:<group>``)
  or kept, as received, in the rejected store; never both, never twice;
- an accepted valid request stores every one of its messages (checked in Redis at
  once), system messages included, and each is delivered exactly once, in its own
  chat (message ids and texts encode the chat they were sent to), carrying its text,
  its sender, its ``sent_at`` and, as ``data``, the message object exactly as sent;
- at the end, the number of delivered messages is exactly the number the service
  said it stored (no message appears from a refused request, none is lost);
- every delivered batch can be serialised for the HTTP forward (what
  ``HttpForwarder`` sends), since an accepted message must be deliverable.

Hypothesis runs in a worker thread (its examples are synchronous); each example's
HTTP call runs on the test's event loop, where the app and its engine live
(``asyncio.run_coroutine_threadsafe``). The end-of-test accounting then runs in the
test itself.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from service.engine.engine import Engine
from service.store.backlog import read_backlog
from service.store.keyspace import Keyspace
from service.store.rejected import RejectedStore
from service.tooling.samples import WA_OBJECT, wa_text, wa_value, wa_webhook
from service.web.body import MAX_BODY_BYTES, MAX_MESSAGES_PER_POST
from tests.helpers import HOSTILE, Collector, app_client, is_seen, seen_total

T = TypeVar("T")

SECRET = "fuzz-app-secret"
WA = "/webhooks/whatsapp"
GEN = "/v1/messages"
ALLOWED = {WA: {200, 400, 401, 413}, GEN: {202, 400, 413, 422}}
REFUSED = {400, 401, 413, 422}
# Python's JSON parser gives up (RecursionError) somewhere past ~900 levels, depending
# on the stack it runs on; the service then answers 400 (parse_json: "absurd
# nesting"). A body nested at most this deep must be read.
PARSER_DEPTH = 800

FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

_fresh = itertools.count()


def fresh(prefix: str) -> str:
    """A message id or marker never used before in this run."""
    return f"{prefix}{next(_fresh)}"


LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def same_text(got: str | None, want: str | None) -> bool:
    """Equal, "" and None both meaning no text; a lone surrogate may come back as U+FFFD."""
    if (got or None) == (want or None):
        return True

    def replaced(s: str) -> str:
        return LONE_SURROGATE.sub("\ufffd", s)

    return got is not None and want is not None and replaced(got) == replaced(want)


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- strategies: values ----------------------------------------------------------------------

EDGE = [
    "",
    " ",
    "\x00",
    "\ud800",  # lone surrogates: json.dumps escapes them, the service decodes them back
    "\udfff",
    "\ud83d",
    "\ud83d\ude00",
    "😀",
    "\ufeff",
    "\u202e",
    "e\u0301",
    "\U0010ffff",
    "{b1}",
    "}:timer:",
    ":",
    "wa:1:2",
    "null",
    "\\",
    '"',
    "\n",
    "é",
]

strings = st.one_of(
    st.text(max_size=30),
    st.sampled_from(EDGE),
    st.lists(st.sampled_from(EDGE), max_size=6).map("".join),
    st.builds(
        lambda s, n: s * n, st.sampled_from(["x", "é", "😀", "\ud800"]), st.integers(300, 3000)
    ),
)
huge_strings = st.builds(
    lambda s, n: s * n, st.sampled_from(["a", "é", "😀"]), st.integers(60_000, 70_000)
)


def json_trees(floats: st.SearchStrategy[float]) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(10**60), max_value=10**60),
        floats,
        strings,
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(strings, children, max_size=4)
        ),
        max_leaves=16,
    )


# Anything Python's json reads, NaN and ±Infinity included (not JSON, strictly).
json_values = json_trees(st.floats())
# JSON proper: what a valid payload may carry.
strict_json_values = json_trees(st.floats(allow_nan=False, allow_infinity=False))


def encode(doc: Any, ascii_only: bool = True) -> bytes:
    """JSON bytes; non-ASCII raw (lone surrogates then make the bytes invalid UTF-8)."""
    if ascii_only:
        return json.dumps(doc).encode()
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


DEEP = "__DEEP__"


@st.composite
def deep_json(draw: st.DrawFn, min_depth: int = 1, max_depth: int = 3000) -> str:
    """Raw JSON text nested ``depth`` levels (written by hand: json.dumps would recurse)."""
    depth = draw(st.integers(min_depth, max_depth))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"k":', "}]")]))
    leaf = draw(st.sampled_from(["1", '""', "null", "[]", "{}", '"\\ud800"']))
    return opener * depth + leaf + closer * depth


def with_deep(body: bytes, deep: str) -> bytes:
    return body.replace(json.dumps(DEEP).encode(), deep.encode())


@st.composite
def raw_bodies(draw: st.DrawFn, docs: st.SearchStrategy[Any]) -> bytes:
    """A document encoded one of several ways, or raw bytes."""
    kind = draw(st.sampled_from(["ascii", "utf8", "deep", "bytes", "truncated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        return draw(deep_json()).encode()
    body = encode(draw(docs), ascii_only=kind != "utf8")
    if kind == "truncated":
        return body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    return body


@st.composite
def flipped(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` with a few bytes overwritten."""
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    return bytes(data)


# --- strategies: WhatsApp payloads --------------------------------------------------------------

PHONE_IDS = ["200000000000002", "200000000000003"]
SENDERS = ["15550111111", "+15550122222", "15550133333", "447700900123"]
USER_IDS = ["US.13491208655302741918", "BR.77"]  # BSUID-only senders (no "from")
GROUPS = ["120363000000000001", "120363000000000002"]
TYPES = ["text", "image", "interactive", "button", "reaction", "location", "audio", "system"]


@dataclass
class Planned:
    """One message of a generated WhatsApp payload (ids are assigned when it is sent)."""

    local: int  # its placeholder id is f"@{local}"
    phone_id: str  # metadata.phone_number_id of its value
    chat_key: str  # its chat is f"wa:{phone_number_id}:{chat_key}": the sender or "g:<group>"
    sender: str  # Sender.id: the phone number without "+", or the BSUID
    text: str | None  # the text a bot reads ("" read as None)
    name: str | None = None  # the sender's profile name, from value.contacts

    @property
    def chat_id(self) -> str:
        return f"wa:{self.phone_id}:{self.chat_key}"


@st.composite
def wa_message(draw: st.DrawFn, local: int, phone_id: str) -> tuple[dict[str, Any], Planned]:
    sender = draw(st.sampled_from(SENDERS + USER_IDS))
    kind = draw(st.sampled_from(TYPES))
    text = draw(strings)
    msg: dict[str, Any] = {"id": f"@{local}", "timestamp": str(draw(st.integers(0, 2**33)))}
    if sender in USER_IDS:
        msg["from_user_id"] = sender
    else:
        msg["from"] = sender
    msg["type"] = kind
    shown: str | None = text
    if kind == "text":
        msg["text"] = {"body": text}
    elif kind == "image":
        msg["image"] = {"caption": text, "mime_type": "image/jpeg", "id": "3000000000000003"}
    elif kind == "interactive":
        msg["interactive"] = {"type": "button_reply", "button_reply": {"id": "b", "title": text}}
    elif kind == "button":
        msg["button"] = {"text": text, "payload": "p"}
        shown = text or "p"  # no text: the payload
    elif kind == "reaction":
        msg["reaction"] = {"message_id": "wamid.earlier", "emoji": text}
    elif kind == "location":
        latitude = draw(st.floats(-90, 90))
        msg["location"] = {"latitude": latitude, "longitude": 1.5}
        # every digit kept: the shortest form that reads back as the same float
        shown = f"{int(latitude) if latitude.is_integer() else repr(latitude)},1.5"
    elif kind == "audio":
        msg["audio"] = {"id": "4000000000000004"}
        shown = None
    else:  # system: batched like any other message now
        msg["system"] = {"body": text}
    if draw(st.booleans()):
        msg["context"] = {"from": "15550100000", "id": "wamid.ctx"}
    group = draw(st.sampled_from([None, None, *GROUPS]))
    if group is not None:
        msg["group_id"] = group
    key = sender.removeprefix("+")
    chat_key = key if group is None else f"g:{group}"
    return msg, Planned(local, phone_id, chat_key, key, shown or None)


@st.composite
def wa_payloads(draw: st.DrawFn) -> tuple[dict[str, Any], list[Planned]]:
    """A valid Cloud API payload: 1-2 entries of 1-2 changes, up to 4 messages each
    (some in groups), contacts, statuses, errors, a non-message change and Meta-style
    repeated messages."""
    planned: list[Planned] = []
    local = itertools.count()
    entries = []
    for _ in range(draw(st.integers(1, 2))):
        changes: list[dict[str, Any]] = []
        for _ in range(draw(st.integers(1, 2))):
            phone_id = draw(st.sampled_from(PHONE_IDS))
            msgs: list[dict[str, Any]] = []
            plans: list[Planned] = []
            for _ in range(draw(st.integers(0, 4))):
                msg, plan = draw(wa_message(next(local), phone_id))
                msgs.append(msg)
                plans.append(plan)
            if msgs and draw(st.booleans()):
                msgs.append(copy.deepcopy(draw(st.sampled_from(msgs))))  # a repeat: stored once
            senders = {m.get("from", "").removeprefix("+") for m in msgs} - {""}
            extra: dict[str, Any] = {}
            if draw(st.booleans()):
                extra["statuses"] = [
                    {"id": "wamid.s", "status": "read", "timestamp": "1", "recipient_id": "1"}
                ]
            if draw(st.booleans()):
                extra["errors"] = [{"code": 131047, "title": draw(strings)}]
            contacts = {s: draw(strings) for s in sorted(senders)}
            for plan in plans:
                plan.name = contacts.get(plan.sender) or None  # BSUID senders: no contact
            planned.extend(plans)
            changes.append(wa_value(msgs, phone_number_id=phone_id, contacts=contacts, **extra))
        if draw(st.booleans()):
            changes.append({"field": "account_update", "value": {"event": draw(strings)}})
        entries.append(changes)
    return wa_webhook(*entries, waba_id="100000000000001"), planned


def paths_of(doc: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indexes) into a JSON document, the root excluded."""
    out = []
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for k, v in items:
        out.append((*here, k))
        out.extend(paths_of(v, (*here, k)))
    return out


@st.composite
def corrupt(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` with one node deleted, emptied, retyped, made huge or made very deep."""
    doc = copy.deepcopy(doc)
    paths = paths_of(doc)
    if not paths:
        return draw(json_values)
    path = draw(st.sampled_from(paths))
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    op = draw(st.sampled_from(["delete", "null", "empty", "retype", "huge", "deep"]))
    if op == "delete":
        del parent[key]
    elif op == "null":
        parent[key] = None
    elif op == "empty":
        parent[key] = type(parent[key])() if isinstance(parent[key], str | list | dict) else ""
    elif op == "retype":
        parent[key] = draw(json_values)
    elif op == "huge":
        parent[key] = draw(huge_strings)
    else:
        parent[key] = DEEP
    return doc


# --- a model of where the parser looks (independent of it) --------------------------------------

MISSING = object()
IDENTITY = ("id", "from", "from_user_id", "group_id")  # what names a message and its chat


def _items(node: Any, key: str) -> list[Any]:
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, list) else []


def message_values(doc: Any) -> list[dict[str, Any]]:
    """The ``value`` objects of a webhook document's ``messages`` changes."""
    if not isinstance(doc, dict) or doc.get("object") != WA_OBJECT:
        return []
    return [
        change["value"]
        for entry in _items(doc, "entry")
        for change in _items(entry, "changes")
        if isinstance(change, dict)
        and change.get("field") == "messages"
        and isinstance(change.get("value"), dict)
    ]


def reachable(doc: Any) -> list[tuple[Any, Any]]:
    """(metadata.phone_number_id as sent, message) for every item of every
    ``value.messages`` list the envelope leads to."""
    out: list[tuple[Any, Any]] = []
    for value in message_values(doc):
        meta = value.get("metadata")
        phone_id = meta.get("phone_number_id") if isinstance(meta, dict) else None
        out.extend((phone_id, msg) for msg in _items(value, "messages"))
    return out


def as_text(value: Any) -> str | None:
    """An id field as the contract reads it: a non-empty string, or a number as text."""
    if isinstance(value, str):
        return value if value and value != DEEP else None  # DEEP: a list or an object
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def holds(node: Any, needle: str) -> bool:
    stack = [node]
    while stack:
        item = stack.pop()
        if item == needle:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def scrub(node: Any, replacement: str) -> Any:
    """``node`` with every lone surrogate replaced, as storing it as UTF-8 does:
    U+FFFD in a stored message, "?" in the rejected store."""
    if isinstance(node, str):
        return LONE_SURROGATE.sub(replacement, node)
    if isinstance(node, list):
        return [scrub(v, replacement) for v in node]
    if isinstance(node, dict):
        return {scrub(k, replacement): scrub(v, replacement) for k, v in node.items()}
    return node


def utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def as_decoded(text: str | None, ascii_only: bool) -> str | None:
    """``text`` as JSON decoding gives it back (escaped surrogate pairs recombine)."""
    return json.loads(json.dumps(text)) if ascii_only and text is not None else text


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))


def nesting(body: bytes) -> int:
    """How deep lists and objects nest in ``body`` (strings skipped)."""
    depth = deepest = 0
    for c in _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKET):
        depth += 1 if c in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_json(body: bytes) -> tuple[str, Any]:
    """("json", document), ("invalid", None) for bytes that are not strict JSON, or
    ("deep", None) when ``body`` nests beyond ``PARSER_DEPTH`` (either may happen)."""
    if nesting(body) > PARSER_DEPTH:
        return "deep", None
    try:
        return "json", json.loads(body, parse_constant=_not_json)
    except RecursionError:
        return "deep", None
    except ValueError:
        return "invalid", None


def wa_statuses(reading: str, doc: Any, body: bytes) -> set[int]:
    """What a signed POST of ``body`` may be answered, by the tolerant contract."""
    if len(body) > MAX_BODY_BYTES:
        return {413}
    if reading == "deep":
        return {200, 400}
    if reading == "invalid" or not isinstance(doc, dict):
        return {400}
    return {200, 413} if len(reachable(doc)) > MAX_MESSAGES_PER_POST else {200}


# --- strategies: generic messages ------------------------------------------------------------

BAD_CHATS = ["", "\ud800", "ok\udfffok", "x" * 1025]
chat_ids = st.one_of(
    st.sampled_from(HOSTILE), st.text(min_size=1, max_size=24), st.sampled_from(BAD_CHATS)
)


def chat_ok(chat: Any) -> bool:
    if not isinstance(chat, str) or not 1 <= len(chat) <= 1024:
        return False
    try:
        chat.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class GenPlan:
    """A generated generic POST: messages with placeholder texts "@k" and ids "#k"."""

    doc: Any
    chats: list[str]  # chat of message k
    ids: list[int | None]  # id slot of message k (same slot = same id), None: no id


@st.composite
def generic_payloads(draw: st.DrawFn) -> GenPlan:
    chats = draw(st.lists(chat_ids, min_size=1, max_size=3))
    msgs: list[dict[str, Any]] = []
    plan_chats: list[str] = []
    ids: list[int | None] = []
    for k in range(draw(st.integers(1, 8))):
        chat = draw(st.sampled_from(chats))
        msg: dict[str, Any] = {"chat_id": chat, "text": f"@{k}"}
        slot = draw(st.sampled_from([None, k, *(i for i in ids if i is not None)]))
        if slot is not None and slot != k and plan_chats[slot] != chat:
            slot = k  # an id repeated in another chat is another message
        if slot is not None:
            msg["id"] = f"#{slot}"
        if draw(st.booleans()):
            msg["sent_at"] = draw(st.floats(0, 1e12))
        if draw(st.booleans()):
            msg["data"] = draw(strict_json_values)
        if draw(st.booleans()):
            msg["type"] = draw(st.sampled_from(["text", "image", "note"]))
        msgs.append(msg)
        plan_chats.append(chat)
        ids.append(slot)
    doc: Any = msgs[0] if len(msgs) == 1 and draw(st.booleans()) else {"messages": msgs}
    return GenPlan(doc, plan_chats, ids)


# --- the harness ------------------------------------------------------------------------------


@dataclass
class WaWant:
    """What a stored WhatsApp message must be delivered with."""

    data: Any  # the message object as sent (lone surrogates as U+FFFD)
    sender: str  # Sender.id
    name: str | None  # Sender.name, when check_name
    check_name: bool
    sent_at: float | None  # None: not checked (an unreadable timestamp: the receive time)


@dataclass
class Ledger:
    stored: int = 0  # messages the service said (or showed) it stored
    expect: dict[str, str] = field(default_factory=dict)  # id or text marker -> its chat
    texts: dict[str, str | None] = field(default_factory=dict)  # message id -> its text
    wa: dict[str, WaWant] = field(default_factory=dict)  # wamid -> what it carries
    forbidden: set[str] = field(default_factory=set)  # ids / markers never to be delivered
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    rejected: int = 0  # entries accepted requests added to the rejected store
    outcomes: Counter[str] = field(default_factory=Counter)  # WhatsApp messages accounted for


class Fuzz:
    def __init__(
        self,
        client: httpx.AsyncClient,
        engine: Engine,
        collector: Collector,
        redis: Redis,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.client = client
        self.engine = engine
        self.collector = collector
        self.redis = redis
        self.loop = loop
        self.keys: Keyspace = engine.keys
        self.rejected = RejectedStore(redis, self.keys)
        self.last_rejected = 0  # rejected-store entries the last request added
        self.ledger = Ledger()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """From hypothesis's thread: run ``coro`` on the app's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def seen_total(self) -> int:
        """Entries in the dedupe index: one per stored message that has an id."""
        return await seen_total(self.redis, self.keys)

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[httpx.Response, int]:
        """POST; checks the status is one the contract allows and that a refused request
        stored nothing. Returns the response and how many dedupe entries it added (and
        sets ``last_rejected``: how many rejected-store entries)."""
        before, kept_before = await self.seen_total(), await self.rejected.count()
        try:
            r = await self.client.post(path, content=body, headers=headers or {})
        except Exception as exc:  # the app raised instead of answering
            pytest.fail(f"POST {path} raised {type(exc).__name__}: {exc}\nbody={body[:300]!r}")
        added = await self.seen_total() - before
        self.last_rejected = kept = await self.rejected.count() - kept_before
        self.ledger.statuses[(path, r.status_code)] += 1
        assert r.status_code in ALLOWED[path], (r.status_code, r.text[:300], body[:300])
        if r.status_code in REFUSED:
            assert added == 0, f"refused ({r.status_code}) yet stored {added}: {body[:300]!r}"
            assert kept == 0, f"refused ({r.status_code}) yet rejected {kept}: {body[:300]!r}"
            assert r.headers["content-type"].startswith("application/json")
            assert isinstance(r.json()["error"], str)
        else:
            self.ledger.rejected += kept
        return r, added

    async def post_wa(
        self, body: bytes, signature: str | None = "sign"
    ) -> tuple[httpx.Response, int]:
        headers = {"Content-Type": "application/json"}
        if signature == "sign":
            headers["X-Hub-Signature-256"] = sign(body)
        elif signature is not None:
            headers["X-Hub-Signature-256"] = signature
        r, added = await self.post(WA, body, headers)
        if r.status_code == 200:
            self.ledger.stored += added  # every WhatsApp message has an id
        return r, added

    async def post_generic(self, body: bytes) -> tuple[httpx.Response, int]:
        r, added = await self.post(GEN, body)
        if r.status_code == 202:
            doc = r.json()
            assert set(doc) == {"accepted", "duplicates"}
            self.ledger.stored += doc["accepted"]
            assert 0 <= added <= doc["accepted"]
        return r, added

    # --- WhatsApp payloads with known contents ---

    def instantiate(self, doc: dict[str, Any], planned: list[Planned]) -> dict[int, str]:
        """Give the placeholder ids "@k" of a generated payload fresh wamids."""
        ids = {p.local: fresh("wamid.FZ.") for p in planned}

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                value = node.get("id")
                if isinstance(value, str) and value.startswith("@") and value[1:].isdigit():
                    node["id"] = ids.get(int(value[1:]), value)
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(doc)
        return ids

    async def stored_in_redis(self, chat_id: str, message_id: str) -> bool:
        return await is_seen(self.redis, self.keys, chat_id, message_id)

    async def rejected_by_id(self) -> dict[str, list[Any]]:
        """The raw objects in the rejected store that carry a string ``id``, by id."""
        out: dict[str, list[Any]] = {}
        for entry in await self.rejected.list(limit=10**9):
            assert entry.source == "whatsapp", entry
            raw = entry.raw
            if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                out.setdefault(raw["id"], []).append(raw)
        return out

    async def account(
        self,
        sent: Any,
        original: Any,
        planned: list[Planned],
        ids: dict[int, str],
        *,
        ascii_only: bool = True,
        check_names: bool = False,
    ) -> Counter[str]:
        """After a 200 for the document ``sent`` (``original`` with a corruption, or
        ``original`` itself): no planned message is lost.

        Each one whose envelope still leads to it, in a single version (a repeat may
        have been corrupted apart from it), with its id, sender and group as planned,
        is either stored in its chat or kept in the rejected store as it was sent, not
        both; the ledger then expects it delivered once, with its object as ``data``
        (and, when it is intact, its text and ``sent_at``), or never. One the envelope
        no longer leads to ("gone") is never stored. Returns how many were "stored",
        "rejected", "gone", or "untracked" (a repeat differs, the deep part is in it, or
        its id, sender or group changed: stored or not, its chat is anyone's guess).
        """
        originals: dict[str, Any] = {}
        for _, msg in reachable(original):
            originals.setdefault(msg["id"], msg)
        found: dict[str, list[tuple[Any, Any]]] = {}
        for phone_id, msg in reachable(sent):
            wamid = msg.get("id") if isinstance(msg, dict) else None
            if isinstance(wamid, str):
                found.setdefault(wamid, []).append((phone_id, msg))
        kept = await self.rejected_by_id()
        outcome: Counter[str] = Counter()
        for p in planned:
            wamid = ids[p.local]
            mine = originals[wamid]
            copies = found.get(wamid, [])
            versions: list[Any] = []
            for _, msg in copies:
                if msg not in versions:
                    versions.append(msg)
            if not versions:  # the envelope no longer leads to it, or its id is gone
                assert not await self.stored_in_redis(p.chat_id, wamid), f"{wamid} stored"
                self.ledger.forbidden.add(wamid)
                outcome["gone"] += 1
                continue
            if len(versions) > 1 or holds(versions[0], DEEP):
                outcome["untracked"] += 1
                continue
            version = versions[0]
            if any(version.get(k, MISSING) != mine.get(k, MISSING) for k in IDENTITY):
                outcome["untracked"] += 1
                continue
            phone_id = as_text(copies[0][0])
            chat = None if phone_id is None else f"wa:{phone_id}:{p.chat_key}"
            stored = chat is not None and utf8(chat) and await self.stored_in_redis(chat, wamid)
            raws = kept.get(wamid, [])
            where = f"{wamid} (chat {chat!r:.80}): {json.dumps(version)[:300]}"
            assert len(raws) <= 1, f"kept {len(raws)} times in the rejected store: {where}"
            if raws:
                assert raws[0] == scrub(version, "?"), f"rejected, not as sent: {where}"
            if not stored and not raws:
                pytest.fail(f"lost: neither stored in its chat nor rejected: {where}")
            if stored and raws:
                pytest.fail(f"both stored and rejected: {where}")
            if raws:
                self.ledger.forbidden.add(wamid)
                outcome["rejected"] += 1
                continue
            assert chat is not None
            intact = version == mine
            self.ledger.expect[wamid] = chat
            if intact:
                self.ledger.texts[wamid] = as_decoded(p.text, ascii_only)
            self.ledger.wa[wamid] = WaWant(
                data=scrub(version, "\ufffd"),
                sender=p.sender,
                name=as_decoded(p.name, ascii_only),
                check_name=check_names,
                sent_at=float(version["timestamp"]) if intact else None,
            )
            outcome["stored"] += 1
        self.ledger.outcomes.update(outcome)
        return outcome

    # --- known edges, sent after every run (random search may miss them) ---

    async def post_known_whatsapp(self) -> None:
        """Texts with lone surrogates (escaped, and raw as CESU-8 bytes), and a 32-deep
        message field (the parser's depth limit)."""
        for text, ascii_only in (("x\ud83dy", True), ("\udfff", False), ("\ud83d\ude00", True)):
            wamid = fresh("wamid.FZ.known.")
            message = {**wa_text(SENDERS[0], wamid, text, timestamp=1), "extra": DEEP}
            doc = wa_webhook([wa_value([message], phone_number_id=PHONE_IDS[0])])
            body = with_deep(encode(doc, ascii_only), "[" * 30 + "]" * 30)
            r, added = await self.post_wa(body)
            assert r.status_code == 200 and added == 1 and self.last_rejected == 0, r.text
            sent = json.loads(body)["entry"][0]["changes"][0]["value"]["messages"][0]
            self.ledger.expect[wamid] = f"wa:{PHONE_IDS[0]}:{SENDERS[0]}"
            self.ledger.texts[wamid] = sent["text"]["body"]
            self.ledger.wa[wamid] = WaWant(scrub(sent, "\ufffd"), SENDERS[0], None, True, 1.0)

    async def post_known_generic(self) -> None:
        """``data`` with lone surrogates, and ``data`` nested 31 and 300 deep (the JSON
        parser takes ~900), each beside a plain message: either accepted, and then
        deliverable, or refused as a whole (422 naming ``data``)."""
        for chat, data in (
            ("edge:surrogate", '{"k\\udfff": "\\ud800"}'),
            ("edge:deep31", "[" * 31 + "]" * 31),
            ("edge:deep300", "[" * 300 + "]" * 300),
        ):
            marker, other = fresh("fz-text-"), fresh("fz-text-")
            body = (
                f'{{"messages": [{{"chat_id": "{chat}", "id": "{fresh("fz-id-")}", "text": '
                f'"{marker}", "data": {data}}}, {{"chat_id": "{chat}", "text": "{other}"}}]}}'
            ).encode()
            r, added = await self.post_generic(body)
            if r.status_code == 202:
                assert r.json()["accepted"] == 2 and added == 1, r.text
                self.ledger.expect[marker] = self.ledger.expect[other] = chat
            else:
                assert r.status_code == 422 and "data" in r.text, r.text
                self.ledger.forbidden.update((marker, other))

    # --- the end of a test ---

    async def settle(self) -> None:
        """Everything stored is delivered once, in its chat, with what it carried;
        nothing refused or rejected shows up."""
        ledger, collector = self.ledger, self.collector
        await collector.wait_for(lambda: collector.message_count() >= ledger.stored, 20)
        deadline = time.monotonic() + 10
        while not await self.drained():
            if time.monotonic() > deadline:
                pytest.fail(f"batches still open or in flight: {await self.leftovers()}")
            await asyncio.sleep(0.02)
        delivered = [(b, m) for b in collector.batches for m in b.messages]
        assert len(delivered) == ledger.stored, (len(delivered), ledger.stored, ledger.statuses)
        seen: Counter[str] = Counter()
        for b, m in delivered:
            for key in {k for k in (m.id, m.text) if k is not None} & ledger.expect.keys():
                seen[key] += 1
                assert ledger.expect[key] == b.chat_id, f"{key!r} sent to chat " + (
                    f"{ledger.expect[key]!r}, delivered in chat {b.chat_id!r}"
                )
            if m.id in ledger.texts:
                want = ledger.texts[m.id]
                assert same_text(m.text, want), (m.id, m.text, want)
            wa = ledger.wa.get(m.id)
            if wa is not None:
                assert m.data == wa.data, f"{m.id}: data {m.data!r:.300} != {wa.data!r:.300}"
                assert m.sender is not None and m.sender.id == wa.sender, (m.id, m.sender)
                if wa.check_name:
                    assert same_text(m.sender.name, wa.name), (m.id, m.sender.name, wa.name)
                if wa.sent_at is not None:
                    assert m.sent_at == wa.sent_at, (m.id, m.sent_at, wa.sent_at)
            assert not {m.id, m.text} & ledger.forbidden, f"refused message delivered: {m}"
        missing = [k for k in ledger.expect if seen[k] != 1]
        assert not missing, f"not delivered exactly once: {[(k, seen[k]) for k in missing][:5]}"
        for b in collector.batches:
            sent = [m.sent_at for m in b.messages if m.sent_at is not None]
            assert sent == sorted(sent), f"batch {b.batch_id} out of sent_at order"
        unforwardable = []
        for b in collector.batches:
            try:
                b.model_dump_json()  # what HttpForwarder sends
            except Exception as exc:
                unforwardable.append((b.chat_id[:40], str(exc)[:120]))
        assert not unforwardable, (
            f"{len(unforwardable)} accepted batches cannot be forwarded: {unforwardable[:5]}"
        )

    async def leftovers(self) -> dict[str, Any]:
        """What is still due, in flight, open or claimed (for failure messages)."""
        out: dict[str, Any] = {}
        for bk in self.keys.all_buckets():
            for name, key in (("due", bk.due), ("inflight", bk.inflight)):
                entries = await self.redis.zrange(key, 0, -1, withscores=True)
                if entries:
                    out[f"{name}:{bk.bucket}"] = [(m[:60], s) for m, s in entries[:5]]
        for kind in ("buf", "proc", "timer"):
            keys = await self.keys_of(kind)
            if keys:
                out[kind] = [k[:80] for k in keys[:5]]
        out["server_ms"] = await self.redis.time()
        return out

    async def drained(self) -> bool:
        if (await read_backlog(self.redis, self.keys)).pending:
            return False
        return not await self.keys_of("buf") and not await self.keys_of("proc")

    async def keys_of(self, kind: str) -> list[bytes]:
        """Keys of one kind (buf, proc, timer...), by exact prefix: a glob such as
        ``batcher:{b*}:buf:*`` also matches the meta key of a chat named "P:{b3}:buf:x"."""
        prefixes = tuple(
            self.keys.proc(b, "")[: -len("proc:")] + kind.encode() + b":"
            for b in range(self.keys.buckets)
        )
        return [
            k
            async for k in self.redis.scan_iter(match=self.keys.pattern(), count=1000)
            if k.startswith(prefixes)
        ]


@pytest.fixture
async def fuzz(redis_url: str, redis_client: Redis) -> AsyncIterator[Fuzz]:
    collector = Collector()
    async with app_client(redis_url, collector, whatsapp_app_secret=SECRET) as (client, engine):
        yield Fuzz(client, engine, collector, redis_client, asyncio.get_running_loop())


async def in_thread(examples: Callable[[], None]) -> None:
    """Run a synchronous @given test off the event loop (its examples call back into it)."""
    await asyncio.to_thread(examples)


# --- WhatsApp --------------------------------------------------------------------------------


async def test_whatsapp_valid_payloads(fuzz: Fuzz) -> None:
    """Valid multi-entry, multi-sender payloads: 200, every message stored at once (system
    and group messages included), none rejected, repeats stored once; then each delivered
    once in its own chat, with its text, sender, profile name, sent_at and, as data, the
    message object as sent."""

    @FUZZ
    @given(generated=wa_payloads(), ascii_only=st.booleans())
    def examples(generated: tuple[dict[str, Any], list[Planned]], ascii_only: bool) -> None:
        doc, planned = copy.deepcopy(generated[0]), generated[1]
        ids = fuzz.instantiate(doc, planned)
        body = encode(doc, ascii_only)
        sent = json.loads(body)  # as the service reads it
        r, added = fuzz.run(fuzz.post_wa(body))
        assert r.status_code == 200, r.text
        assert (added, fuzz.last_rejected) == (len(planned), 0)
        outcome = fuzz.run(
            fuzz.account(sent, sent, planned, ids, ascii_only=ascii_only, check_names=True)
        )
        assert outcome == Counter(stored=len(planned)), outcome
        for p in planned:
            assert fuzz.ledger.expect[ids[p.local]] == p.chat_id, (p, ids[p.local])

    await in_thread(examples)
    assert fuzz.ledger.statuses[(WA, 200)] > 0
    await fuzz.post_known_whatsapp()
    await fuzz.settle()


async def test_whatsapp_corrupted_payloads(fuzz: Fuzz) -> None:
    """A valid payload with one node deleted, nulled, emptied, retyped, made huge or
    nested very deep: 200 (400 only for NaN/Infinity, which is not JSON, or nesting
    beyond the JSON parser), never a 500; no message lost: each one the corruption left
    reachable and named as sent is stored in its chat or kept in the rejected store."""

    @FUZZ
    @given(generated=wa_payloads(), data=st.data())
    def examples(generated: tuple[dict[str, Any], list[Planned]], data: st.DataObject) -> None:
        doc, planned = copy.deepcopy(generated[0]), generated[1]
        ids = fuzz.instantiate(doc, planned)
        bad = data.draw(corrupt(doc))
        body = with_deep(encode(bad), data.draw(deep_json(20, 1200)))
        reading, read = read_json(body)
        r, added = fuzz.run(fuzz.post_wa(body))
        assert r.status_code in wa_statuses(reading, read, body), (reading, r.text[:300])
        if r.status_code != 200:
            fuzz.ledger.forbidden.update(ids.values())
            return
        assert added <= len(planned) + 1  # a corrupted repeat may be a message of its own
        # The document with the deep part as its placeholder: what the corruption did.
        fuzz.run(fuzz.account(json.loads(encode(bad)), json.loads(encode(doc)), planned, ids))

    await in_thread(examples)
    assert fuzz.ledger.statuses[(WA, 200)] > 0
    assert fuzz.ledger.outcomes["stored"] > 0, fuzz.ledger.outcomes
    assert fuzz.ledger.rejected > 0, "no corruption was kept in the rejected store"
    await fuzz.settle()


wa_documents = st.one_of(
    json_values,
    st.fixed_dictionaries({"object": st.just(WA_OBJECT), "entry": json_values}),
    st.builds(
        lambda value, kind: wa_webhook([{"field": kind, "value": value}]),
        json_values,
        st.sampled_from(["messages", "account_update"]) | json_values,
    ),
    st.builds(
        lambda msg, meta: wa_webhook([{"metadata": meta, "messages": [msg]}]),
        st.dictionaries(
            st.sampled_from(["from", "id", "timestamp", "type", "text", "from_user_id", "errors"]),
            json_values,
        ),
        st.fixed_dictionaries({"phone_number_id": json_values}) | json_values,
    ),
)


async def test_whatsapp_random_documents_and_bytes(fuzz: Fuzz) -> None:
    """Random JSON (also in the payload's skeleton), deep nesting, truncated and random
    bytes, all correctly signed: 200 for a JSON object, 400 for anything else (or for
    nesting beyond the JSON parser), never a 500; odd messages go to the rejected store."""

    @FUZZ
    @given(body=raw_bodies(wa_documents))
    def examples(body: bytes) -> None:
        reading, doc = read_json(body)
        r, _ = fuzz.run(fuzz.post_wa(body))
        assert r.status_code in wa_statuses(reading, doc, body), (reading, r.text[:300])

    await in_thread(examples)
    assert fuzz.ledger.statuses[(WA, 200)] > 0
    assert fuzz.ledger.statuses[(WA, 400)] > 0  # bodies that are not a JSON object
    assert fuzz.ledger.rejected > 0, "no odd message was kept in the rejected store"
    await fuzz.settle()


async def test_whatsapp_signatures(fuzz: Fuzz) -> None:
    """Valid payloads with signature headers that are wrong in every way: 401, nothing
    stored. The right one: 200. (Upper-case hex and padding: either, consistently.)"""
    variants = st.sampled_from(
        ["right", "upper", "padded", "none", "empty", "prefix", "sha1", "other-secret",
         "other-body", "short", "bare", "junk"]
    )  # fmt: skip

    @FUZZ
    @given(generated=wa_payloads(), variant=variants, junk=strings, data=st.data())
    def examples(
        generated: tuple[dict[str, Any], list[Planned]],
        variant: str,
        junk: str,
        data: st.DataObject,
    ) -> None:
        doc, planned = copy.deepcopy(generated[0]), generated[1]
        ids = fuzz.instantiate(doc, planned)
        body = encode(doc)
        right = sign(body)
        header = {
            "right": right,
            "upper": "sha256=" + right[7:].upper(),
            "padded": f"  {right} ",
            "none": None,
            "empty": "",
            "prefix": "sha256=",
            "sha1": "sha1=" + right[7:],
            "other-secret": sign(body, "not-" + SECRET),
            "other-body": sign(data.draw(flipped(body))) if body else "",
            "short": right[:-2],
            "bare": right[7:],
            "junk": "".join(ch for ch in junk if " " <= ch <= "~").strip() or "x",
        }[variant]
        if variant == "other-body" and header == right:
            header = right[:-1]  # the flip changed nothing
        r, _ = fuzz.run(fuzz.post_wa(body, signature=header))
        if variant == "right":
            assert r.status_code == 200, r.text
        elif variant not in ("upper", "padded"):
            assert r.status_code == 401, (variant, header, r.text)
        if r.status_code == 200:
            sent = json.loads(body)
            outcome = fuzz.run(fuzz.account(sent, sent, planned, ids, check_names=True))
            assert outcome == Counter(stored=len(planned)), outcome
        else:
            fuzz.ledger.forbidden.update(ids.values())

    await in_thread(examples)
    assert fuzz.ledger.statuses[(WA, 401)] > 0
    await fuzz.settle()


# --- generic -------------------------------------------------------------------------------


async def test_generic_valid_and_corrupted_payloads(fuzz: Fuzz) -> None:
    """Valid one-or-many message POSTs over hostile chat ids (braces, colons, NUL, 1024
    chars, emoji), with repeated ids, random ``data`` and ``sent_at``; and the same with
    one node corrupted. Valid: 202 with the exact accepted/duplicate counts, or 422 when a
    chat id is not acceptable (then nothing stored). Corrupted: 202/400/422, never 500."""

    @FUZZ
    @given(plan=generic_payloads(), corrupted=st.booleans(), data=st.data())
    def examples(plan: GenPlan, corrupted: bool, data: st.DataObject) -> None:
        texts = [fresh("fz-text-") for _ in plan.chats]
        ids = {slot: fresh("fz-id-") for slot in plan.ids if slot is not None}
        # A copy, with fresh markers in place of the placeholders "@k" and "#k".
        doc = json.loads(json.dumps(plan.doc))
        msgs = doc.get("messages", [doc])
        for k, msg in enumerate(msgs):
            msg["text"] = texts[k]
            if "id" in msg:
                msg["id"] = ids[int(msg["id"][1:])]
        if corrupted:
            doc = data.draw(corrupt(doc))
        body = with_deep(encode(doc), data.draw(deep_json(1, 1500)))
        r, added = fuzz.run(fuzz.post_generic(body))
        if corrupted:
            if r.status_code != 202:
                fuzz.ledger.forbidden.update(texts)
            return
        if not all(chat_ok(c) for c in plan.chats):
            assert r.status_code == 422, r.text
            assert any(f["field"].endswith("chat_id") for f in r.json()["fields"]), r.text
            fuzz.ledger.forbidden.update(texts)
            return
        assert r.status_code == 202, r.text
        first: dict[int, int] = {}  # id slot -> the message that carries it
        for k, slot in enumerate(plan.ids):
            if slot is not None:
                first.setdefault(slot, k)
        kept = [k for k, slot in enumerate(plan.ids) if slot is None or first[slot] == k]
        assert r.json() == {"accepted": len(kept), "duplicates": len(plan.ids) - len(kept)}
        assert added == len(first)
        for k, chat in enumerate(plan.chats):
            if k in kept:
                fuzz.ledger.expect[texts[k]] = chat
            else:
                fuzz.ledger.forbidden.add(texts[k])

    await in_thread(examples)
    assert fuzz.ledger.statuses[(GEN, 202)] > 0 and fuzz.ledger.statuses[(GEN, 422)] > 0
    await fuzz.post_known_generic()
    await fuzz.settle()


generic_documents = st.one_of(
    json_values,
    st.dictionaries(
        st.sampled_from(["chat_id", "id", "text", "sent_at", "data", "type", "messages", "x"]),
        json_values,
    ),
    st.fixed_dictionaries({"messages": st.lists(json_values, max_size=4) | json_values}),
    st.fixed_dictionaries({"chat_id": strings, "text": huge_strings}),
)


async def test_generic_random_documents_and_bytes(fuzz: Fuzz) -> None:
    """Random JSON (wrong types everywhere, huge strings over the 64 Ki-char text limit),
    deep nesting, truncated and random bytes: 202, 400 or 422, never a 500."""

    @FUZZ
    @given(body=raw_bodies(generic_documents))
    def examples(body: bytes) -> None:
        fuzz.run(fuzz.post_generic(body))

    await in_thread(examples)
    assert fuzz.ledger.statuses[(GEN, 422)] > 0 and fuzz.ledger.statuses[(GEN, 400)] > 0
    await fuzz.settle()


# --- deterministic edges ------------------------------------------------------------------------


async def test_body_limit_on_both_endpoints(fuzz: Fuzz) -> None:
    """Over 4 MiB: 413, declared (Content-Length) or streamed (chunked, no length), and
    nothing stored; exactly at the limit the body is read and judged on its content."""

    async def chunks(total: int) -> AsyncIterator[bytes]:
        sent = 0
        while sent < total:
            n = min(64 * 1024, total - sent)
            sent += n
            yield b" " * n

    over = b" " * (MAX_BODY_BYTES + 1)
    r, _ = await fuzz.post_wa(over)
    assert r.status_code == 413
    r, _ = await fuzz.post_generic(over)
    assert r.status_code == 413
    for path in (WA, GEN):
        before = await fuzz.seen_total()
        resp = await fuzz.client.post(path, content=chunks(MAX_BODY_BYTES + 1))
        assert resp.status_code == 413, path
        assert await fuzz.seen_total() == before
    at_limit = b" " * MAX_BODY_BYTES
    r, _ = await fuzz.post_wa(at_limit)
    assert r.status_code == 400
    r, _ = await fuzz.post_generic(at_limit)
    assert r.status_code == 400
    await fuzz.settle()


async def test_generic_data_round_trips(fuzz: Fuzz) -> None:
    """``data`` is delivered as it was posted (the contract: "data": any). Falsy values
    (0, false, "", [], 0.0) must not turn into {}."""
    values: list[Any] = [0, False, "", [], 0.0, {"k": 0}, [0], "text", {}]
    for i, value in enumerate(values):
        body = json.dumps({"chat_id": f"web:data:{i}", "id": "d", "data": value}).encode()
        r, _ = await fuzz.post_generic(body)
        assert r.status_code == 202
    await fuzz.collector.wait_messages(len(values), 5)
    got = {b.chat_id: b.messages[0].data for b in fuzz.collector.batches}
    changed = [
        (value, got[f"web:data:{i}"])
        for i, value in enumerate(values)
        if got[f"web:data:{i}"] != value or type(got[f"web:data:{i}"]) is not type(value)
    ]
    assert not changed, f"posted -> delivered: {changed}"


async def test_non_standard_json_constants_are_refused(fuzz: Fuzz) -> None:
    """NaN, Infinity and -Infinity are not JSON (RFC 8259), though Python's json reads
    them; the forward, which is JSON, could only turn them into null. So a body holding
    them is malformed: 400 on both endpoints, nothing stored."""
    for constant in ("NaN", "Infinity", "-Infinity"):
        body = b'{"chat_id": "web:nan", "id": "n-%s", "text": "t", "data": {"x": %s}}' % (
            constant.encode(),
            constant.encode(),
        )
        r, _ = await fuzz.post_generic(body)
        assert r.status_code == 400, (constant, r.status_code, r.text)
        location = {
            "from": SENDERS[0],
            "id": fresh("wamid.FZ.nan."),
            "timestamp": "1",
            "type": "location",
            "location": {"latitude": DEEP, "longitude": 1.5},
        }
        doc = wa_webhook([wa_value([location], phone_number_id=PHONE_IDS[0])])
        r, _ = await fuzz.post_wa(with_deep(encode(doc), constant))
        assert r.status_code == 400, (constant, r.status_code, r.text)


# --- WhatsApp: the rejected store, the message limit, odd fields -----------------------------


def nested(depth: int) -> Any:
    """A list nested ``depth`` levels, non-empty all the way down."""
    node: Any = [1]
    for _ in range(depth - 1):
        node = [node]
    return node


async def test_whatsapp_keeps_what_no_chat_can_be_named_for(fuzz: Fuzz) -> None:
    """One POST with each kind of message the contract keeps in the rejected store (not
    an object, no id, no sender, no metadata.phone_number_id, nested too deep, a chat id
    too long, above the size limit, a ``messages`` that is not a list) beside messages it
    batches (a group message, a system message, an unreadable timestamp): 200; those
    stored in their chats and delivered, these kept whole, as received, never delivered."""
    phone = PHONE_IDS[0]

    def text(sender: str, body: str, **extra: Any) -> dict[str, Any]:
        return {**wa_text(sender, fresh("wamid.FZ.edge."), body, timestamp=7), **extra}

    plain = text(SENDERS[0], "plain")
    group = text(SENDERS[1], "in a group", group_id=GROUPS[0])
    system = {
        "from": SENDERS[2],
        "id": fresh("wamid.FZ.edge."),
        "timestamp": "8",
        "type": "system",
        "system": {"body": "changed number", "type": "customer_changed_number"},
    }
    late = text(SENDERS[3], "when?", timestamp="soon")
    batched = [
        (plain, f"wa:{phone}:{SENDERS[0]}", "plain"),
        (group, f"wa:{phone}:g:{GROUPS[0]}", "in a group"),
        (system, f"wa:{phone}:{SENDERS[2]}", "changed number"),
        (late, f"wa:{phone}:{SENDERS[3]}", "when?"),
    ]
    no_id = text(SENDERS[0], "no id")
    del no_id["id"]
    no_sender = text(SENDERS[0], "no sender")  # and no contacts to name one
    del no_sender["from"]
    deep = text(SENDERS[0], "too deep", extra=nested(40))
    huge = text(SENDERS[0], "x" * (70 * 1024))  # text and data: above 64 KiB
    not_object = ["not", "an", "object", fresh("marker-")]
    orphan = text(SENDERS[0], "no metadata")
    far = text(SENDERS[0], "chat id too long")
    loose = text(SENDERS[0], "messages is not a list")
    first = wa_value(
        [plain, group, system, late, no_id, no_sender, deep, huge], phone_number_id=phone
    )
    first["messages"].append(not_object)
    doc = wa_webhook(
        [
            first,
            {"field": "messages", "value": {"messages": [orphan]}},
            wa_value([far], phone_number_id="9" * 5000),
            {
                "field": "messages",
                "value": {"metadata": {"phone_number_id": phone}, "messages": loose},
            },
        ],
        waba_id="100000000000001",
    )
    rejected = [no_id, no_sender, deep, huge, not_object, orphan, far, loose]
    before = time.time()
    r, added = await fuzz.post_wa(encode(doc))
    after = time.time()
    assert r.status_code == 200, r.text
    assert (added, fuzz.last_rejected) == (len(batched), len(rejected))
    kept = [e.raw for e in await fuzz.rejected.list(limit=100)]
    missing = [json.dumps(m)[:80] for m in rejected if m not in kept]
    assert not missing, f"not kept as received: {missing}"
    for msg, chat, body in batched:
        assert await fuzz.stored_in_redis(chat, msg["id"]), (chat, msg)
        fuzz.ledger.expect[msg["id"]] = chat
        fuzz.ledger.texts[msg["id"]] = body
        sent_at = None if msg is late else float(msg["timestamp"])
        fuzz.ledger.wa[msg["id"]] = WaWant(msg, msg["from"].removeprefix("+"), None, True, sent_at)
    fuzz.ledger.forbidden.update(m["id"] for m in rejected if isinstance(m, dict) and "id" in m)
    await fuzz.settle()
    delivered = {m.id: m for b in fuzz.collector.batches for m in b.messages}
    got = delivered[late["id"]]
    assert got.sent_at is not None and before - 1 <= got.sent_at <= after + 1, got.sent_at
    assert any(w.startswith("timestamp") for w in got.warnings), got.warnings
    assert not delivered[plain["id"]].warnings


async def test_whatsapp_more_than_1000_messages(fuzz: Fuzz) -> None:
    """Meta sends at most 1000 updates in one POST: more is answered 413, and nothing of
    it is stored or kept (the refusal check in ``Fuzz.post``)."""
    msgs = [
        wa_text(SENDERS[0], fresh("wamid.FZ.many."), "m") for _ in range(MAX_MESSAGES_PER_POST + 1)
    ]
    r, _ = await fuzz.post_wa(encode(wa_webhook([wa_value(msgs, phone_number_id=PHONE_IDS[0])])))
    assert r.status_code == 413, r.text
    fuzz.ledger.forbidden.update(m["id"] for m in msgs)
    await fuzz.settle()


@pytest.mark.parametrize("errors", [5, True, 1.5, "x", {"code": 1}])
async def test_whatsapp_value_errors_not_a_list(fuzz: Fuzz, errors: Any) -> None:
    """``value.errors`` that is not a list is an unreadable field, no more: 200, and
    the message beside it stored."""
    msg = wa_text(SENDERS[0], fresh("wamid.FZ.errors."), "beside odd errors")
    doc = wa_webhook([wa_value([msg], phone_number_id=PHONE_IDS[0], errors=errors)])
    r, added = await fuzz.post_wa(encode(doc))
    assert r.status_code == 200 and added == 1, r.text
    fuzz.ledger.expect[msg["id"]] = f"wa:{PHONE_IDS[0]}:{SENDERS[0]}"
    await fuzz.settle()


async def test_whatsapp_message_id_with_a_lone_surrogate(fuzz: Fuzz) -> None:
    """A message id holding a lone surrogate (escaped in the JSON): 200; that message
    stored or rejected, the valid one beside it stored."""
    plain = wa_text(SENDERS[0], fresh("wamid.FZ.plain."), "plain")
    odd = wa_text(SENDERS[2], fresh("wamid.FZ.\ud800."), "odd id")
    doc = wa_webhook([wa_value([plain, odd], phone_number_id=PHONE_IDS[0])])
    r, added = await fuzz.post_wa(encode(doc))
    assert r.status_code == 200, r.text
    assert added + fuzz.last_rejected == 2, (added, fuzz.last_rejected)
    if fuzz.last_rejected:  # kept as received (a lone surrogate is stored as "?")
        assert scrub(odd, "?") in [e.raw for e in await fuzz.rejected.list()]
    chat = f"wa:{PHONE_IDS[0]}:{SENDERS[0]}"
    assert await fuzz.stored_in_redis(chat, plain["id"])
    fuzz.ledger.expect[plain["id"]] = chat
    await fuzz.settle()
