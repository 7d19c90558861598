"""Which of several exporters an agent pushes to: a stable hash of its name, the same in every process."""
from __future__ import annotations

import zlib
from typing import Sequence


def shard_of(agent: str, shards: int) -> int:
    """The shard (0 to SHARDS - 1) of AGENT: the CRC-32 of its name in UTF-8, modulo SHARDS. The same in every
    process, machine and language (zlib, Go's hash/crc32, Java's CRC32); never Python's hash(), salted per process."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    return zlib.crc32(agent.encode("utf-8")) % shards


def exporter_url(agent: str, urls: Sequence[str]) -> str:
    """The exporter AGENT pushes to, of URLS: one per shard, in shard order (the scrape config's order)."""
    return urls[shard_of(agent, len(urls))]
