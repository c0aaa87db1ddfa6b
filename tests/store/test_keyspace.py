"""The keyspace: hostile chat ids stay in their own keys and their bucket's slot."""

from __future__ import annotations

import zlib

import pytest

from service.store.keyspace import SEEN_RING, SEEN_SHARDS, Keyspace, seen_entry, seen_slot_ms
from tests.helpers import HOSTILE


def key_slot(key: bytes) -> int:
    """Redis Cluster's slot of a key (CRC16/XMODEM of the hash tag)."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    crc = 0
    for byte in key:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc % 16384


@pytest.mark.parametrize("chat_id", HOSTILE)
def test_every_key_of_a_chat_shares_its_bucket_slot(chat_id: str) -> None:
    ks = Keyspace("batcher", 64)
    ck = ks.chat(chat_id)
    b = ck.bucket
    keys = [
        ck.buf,
        ck.timer,
        ck.meta,
        b.due,
        b.inflight,
        *b.seen_ring(0),
        *b.seen_ring(SEEN_SHARDS - 1),
        b.dead,
        ks.proc(b.bucket, "abc"),
        ks.dead_batch(b.bucket, "abc"),
        ks.dead_info(b.bucket, "abc"),
    ]
    assert len({key_slot(k) for k in keys}) == 1
    assert b.bucket == zlib.crc32(chat_id.encode()) % 64


def test_hostile_ids_never_collide_and_round_trip() -> None:
    ks = Keyspace("batcher", 8)
    seen: dict[bytes, str] = {}
    for chat_id in HOSTILE:
        ck = ks.chat(chat_id)
        for key in (ck.buf, ck.timer, ck.meta):
            assert key not in seen, (chat_id, seen.get(key))
            seen[key] = chat_id
        assert ks.parse_timer(ck.timer) == chat_id


def test_parse_timer_rejects_foreign_keys() -> None:
    ks = Keyspace("batcher", 8)
    other = Keyspace("batcher", 9)
    assert ks.parse_timer(ks.chat("c").buf) is None
    assert ks.parse_timer(b"other:{b1}:timer:c") is None
    assert ks.parse_timer(b"batcher:{bx}:timer:c") is None
    # a timer of a deployment with another bucket count (wrong bucket for this one)
    wrong = [c for c in ("a", "b", "c", "d", "e") if ks.bucket_of(c) != other.bucket_of(c)]
    assert wrong and ks.parse_timer(other.chat(wrong[0]).timer) is None


def test_prefix_with_braces_is_refused() -> None:
    with pytest.raises(ValueError, match="brace"):
        Keyspace("bad{", 4)


def test_seen_entry_is_unambiguous() -> None:
    # ("ab", "c") and ("a", "bc") must not share a dedupe entry.
    assert seen_entry("ab", "c") != seen_entry("a", "bc")


def test_seen_entry_is_a_non_negative_63_bit_digest_and_a_shard() -> None:
    long_id = "wamid." + "H" * 200
    entries = [seen_entry("x" * 1024, long_id)] + [seen_entry("c", f"m{i}") for i in range(2000)]
    assert all(0 <= e.digest < 2**63 and 0 <= e.shard < SEEN_SHARDS for e in entries)
    assert len({e.shard for e in entries}) == SEEN_SHARDS  # the shards are all used
    assert seen_entry("a", "b") == seen_entry("a", "b")


def test_seen_ring_keys_are_distinct_per_shard_and_slot() -> None:
    b = Keyspace("batcher", 4).bucket(1)
    keys = [k for ring in b.seen_rings() for k in ring]
    assert len(keys) == len(set(keys)) == SEEN_SHARDS * SEEN_RING
    assert b.seen_ring(7)[2] == b"batcher:{b1}:seen:7:2"


def test_seen_slots_cover_the_window_in_four() -> None:
    assert seen_slot_ms(86_400_000) == 21_600_000
    assert seen_slot_ms(10) == 3  # rounded up: four slots never cover less
    assert seen_slot_ms(0) == seen_slot_ms(1) == 1
