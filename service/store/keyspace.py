"""The keyspace: every Redis key name the service uses is built here.

All keys of one chat share one hash tag, ``{b<N>}``, where ``N`` is a bucket
computed from the chat id (``crc32 mod buckets``). The tag is the first
``{…}`` of every key, and the prefix may not contain braces, so a chat id
full of ``{``, ``}`` or ``:`` can neither steer the slot nor collide with
another chat's keys: the chat id is always the last segment of a key whose
earlier segments are fixed by the key's kind.

| key                          | type   | TTL  | role                               |
|------------------------------|--------|------|------------------------------------|
| P:{bN}:buf:<chat>            | list   | none | the open batch                     |
| P:{bN}:timer:<chat>          | string | idle | its expiry means "idle"            |
| P:{bN}:meta:<chat>           | hash   | none | open batch + in-flight batch state |
| P:{bN}:proc:<batch_id>       | list   | none | a claimed batch                    |
| P:{bN}:due                   | zset   | none | chat -> deadline ms                |
| P:{bN}:wake                  | string | none | next nudge ms; also a channel      |
| P:{bN}:inflight              | zset   | none | chat -> lease deadline ms          |
| P:{bN}:seen:<shard>:<r>      | set    | none | dedupe digests of one time slot    |
| P:{bN}:dead                  | zset   | none | dead batch id -> dead-lettered ms  |
| P:{bN}:dead:<batch_id>       | list   | none | a dead batch's messages            |
| P:{bN}:deadinfo:<batch_id>   | hash   | none | a dead batch's error and metadata  |
| P:{b0}:rejected              | hash   | none | id -> a message no chat was found for |
| P:{b0}:perrors               | hash   | none | "<source>:<code>" -> provider errors  |
| P:{b0}:perrors:recent        | list   | none | the latest provider errors (capped)   |
| P:{b0}:members               | zset   | none | live process id -> lease deadline ms  |

The last four are deployment-wide, not per chat: they live in bucket 0's
slot, beside its chats' keys.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from service.settings import Settings

EXPIRED_CHANNEL = "__keyevent@{db}__:expired"

# The dedupe index (SeenEntry): rings of sets, per bucket.
SEEN_SHARDS = 128
SEEN_RING = 5
SEEN_SLOTS_PER_WINDOW = SEEN_RING - 1


def expired_channel(db: int = 0) -> str:
    """The pub/sub channel of expired-key events of database ``db``."""
    return EXPIRED_CHANNEL.format(db=db)


def encode_chat(chat_id: str) -> bytes:
    """Chat ids travel as UTF-8; lone surrogates cannot, and are refused."""
    return chat_id.encode("utf-8")


@dataclass(frozen=True, slots=True)
class BucketKeys:
    bucket: int
    due: bytes
    wake: bytes  # a key, and the pub/sub channel of the same name (lua/wake.lua)
    inflight: bytes
    seen_prefix: bytes  # + "<shard>:<r>" = one ring key of the dedupe index (seen_ring)
    dead: bytes
    timer_prefix: bytes  # + chat id = timer key; used by the nudge script
    buf_prefix: bytes
    meta_prefix: bytes

    def seen_ring(self, shard: int) -> tuple[bytes, ...]:
        """The dedupe index's keys for digests of ``shard``: one per time slot
        of the ring (``SEEN_RING``), in ring order (see ``seen_entry``)."""
        head = self.seen_prefix + str(shard).encode() + b":"
        return tuple(head + str(r).encode() for r in range(SEEN_RING))

    def seen_rings(self) -> list[tuple[bytes, ...]]:
        """Every ring of the bucket's dedupe index (for tools and tests)."""
        return [self.seen_ring(shard) for shard in range(SEEN_SHARDS)]


@dataclass(frozen=True, slots=True)
class ChatKeys:
    chat_id: str
    bucket: BucketKeys
    buf: bytes
    timer: bytes
    meta: bytes


class Keyspace:
    def __init__(self, prefix: str = "batcher", buckets: int = 16) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("key prefix must not contain braces")
        if buckets < 1:
            raise ValueError("buckets must be >= 1")
        self.prefix = prefix
        self.buckets = buckets
        self._buckets = [self._bucket_keys(b) for b in range(buckets)]

    @classmethod
    def of(cls, settings: Settings) -> Keyspace:
        """The keyspace of a deployment (its BATCHER_KEY_PREFIX and BATCHER_BUCKETS)."""
        return cls(settings.key_prefix, settings.buckets)

    def _tag(self, bucket: int) -> bytes:
        return f"{self.prefix}:{{b{bucket}}}:".encode()

    def _bucket_keys(self, bucket: int) -> BucketKeys:
        tag = self._tag(bucket)
        return BucketKeys(
            bucket=bucket,
            due=tag + b"due",
            wake=tag + b"wake",
            inflight=tag + b"inflight",
            seen_prefix=tag + b"seen:",
            dead=tag + b"dead",
            timer_prefix=tag + b"timer:",
            buf_prefix=tag + b"buf:",
            meta_prefix=tag + b"meta:",
        )

    def bucket_of(self, chat_id: str) -> int:
        return zlib.crc32(encode_chat(chat_id)) % self.buckets

    def bucket(self, bucket: int) -> BucketKeys:
        return self._buckets[bucket]

    def all_buckets(self) -> list[BucketKeys]:
        return list(self._buckets)

    def chat(self, chat_id: str) -> ChatKeys:
        raw = encode_chat(chat_id)
        bk = self._buckets[zlib.crc32(raw) % self.buckets]
        return ChatKeys(
            chat_id=chat_id,
            bucket=bk,
            buf=bk.buf_prefix + raw,
            timer=bk.timer_prefix + raw,
            meta=bk.meta_prefix + raw,
        )

    def proc(self, bucket: int, batch_id: str) -> bytes:
        return self._tag(bucket) + b"proc:" + batch_id.encode()

    def dead_batch(self, bucket: int, batch_id: str) -> bytes:
        return self._tag(bucket) + b"dead:" + batch_id.encode()

    def dead_info(self, bucket: int, batch_id: str) -> bytes:
        return self._tag(bucket) + b"deadinfo:" + batch_id.encode()

    @property
    def rejected(self) -> bytes:
        return self._tag(0) + b"rejected"

    @property
    def members(self) -> bytes:
        return self._tag(0) + b"members"

    @property
    def provider_errors(self) -> bytes:
        return self._tag(0) + b"perrors"

    @property
    def provider_errors_recent(self) -> bytes:
        return self._tag(0) + b"perrors:recent"

    def probe(self, token: str) -> bytes:
        """A scratch key prefix for ``batcher check``'s probes (bucket 0's slot);
        no chat's key, nor a timer the listener would take for one."""
        return self._tag(0) + b"probe:" + token.encode() + b":"

    def pattern(self) -> str:
        """A glob matching every key of this keyspace (for operators' tools)."""
        return f"{self.prefix}:{{b*}}:*"

    def parse_timer(self, key: bytes) -> str | None:
        """The chat id of a timer key of this keyspace, else None."""
        head = self.prefix.encode() + b":{b"
        if not key.startswith(head):
            return None
        close = key.find(b"}:timer:", len(head))
        if close < 0:
            return None
        digits = key[len(head) : close]
        if not digits.isdigit():
            return None
        raw = key[close + len(b"}:timer:") :]
        try:
            chat_id = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if int(digits) != zlib.crc32(raw) % self.buckets:
            return None  # another deployment with other bucket settings
        return chat_id


@dataclass(frozen=True, slots=True)
class SeenEntry:
    """A message's entry in the dedupe index: ``digest`` is kept in the ring of
    sets of ``shard``.

    Each bucket's index is ``SEEN_SHARDS`` rings of ``SEEN_RING`` sets, one set
    per time slot of ``seen_slot_ms(window)`` (a quarter of the window,
    rounded up), reused in turn: the append script checks the digest in the
    five latest slots and adds it to the current one, emptying a set first
    when it still holds an older slot (its tag member, ``-(slot + 1)``, says
    which). Entries are thus kept for between the window and 1.25 times it, and
    removed by the script, never by expiry. The digests are non-negative
    63-bit integers, so Redis keeps each set as an intset (8 bytes an entry)
    up to ``set-max-intset-entries``.
    """

    shard: int
    digest: int


def seen_slot_ms(window_ms: int) -> int:
    """The width of one slot of the dedupe ring for a window."""
    return max(1, -(-window_ms // SEEN_SLOTS_PER_WINDOW))


def seen_entry(chat_id: str, message_id: str) -> SeenEntry:
    """Dedupe entry for a message id, scoped to its chat without ambiguity.

    A fixed-size digest (BLAKE2b) of the chat and the id, not the strings: a
    WhatsApp id alone is ~60 bytes, and the entries are kept for the whole
    dedupe window. 7 bits choose the shard, 63 are the digest. Two different
    messages of one bucket share an entry (one would be taken for a
    duplicate) with odds of about n² / 2⁷¹ for n entries of the bucket in the
    window: below 10⁻⁷ at ten million.
    """
    raw = encode_chat(chat_id)
    scoped = str(len(raw)).encode() + b":" + raw + message_id.encode()
    d = hashlib.blake2b(scoped, digest_size=9).digest()
    return SeenEntry(d[8] % SEEN_SHARDS, int.from_bytes(d[:8], "big") >> 1)
