"""Per-stream state that stages keep outside themselves, so any worker can serve any patch and a
restarted worker loses nothing (DESIGN §2): small values by key, and append-only lists of blobs.

`MemoryStateStore` backs embedded mode; `redis_streams.RedisStateStore` backs service mode.
"""

import contextlib
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Protocol


class StateStore(Protocol):
    def get(self, stream_id: str, key: str) -> bytes | None: ...

    def get_many(self, stream_id: str, keys: list[str]) -> list[bytes | None]:
        """`get` of each key, in one round trip."""
        ...

    def set(self, stream_id: str, values: Mapping[str, bytes]) -> None:
        """Set every key of `values`, in one round trip and all at once."""
        ...

    def set_once(self, stream_id: str, key: str, value: bytes) -> bool:
        """Set `key` only if it is unset; True if this call set it (an emit-once guard)."""
        ...

    def append(self, stream_id: str, key: str, value: bytes) -> int:
        """Append to the list `key`; returns its new length."""
        ...

    def items(self, stream_id: str, key: str, start: int = 0) -> list[bytes]:
        """The list `key` from position `start` on."""
        ...

    def lock(self, stream_id: str, stage: str) -> contextlib.AbstractContextManager[None]:
        """Exclusive per-stream section of one stage: one worker of the stage at a time advances a
        stream. Stages keep disjoint keys, so one stage's section does not wait for another's (the
        LM planning a stream's patch while the video encoder encodes its next frames)."""
        ...

    def delete(self, stream_id: str) -> None:
        """Forget the stream."""
        ...


class MemoryStateStore:
    def __init__(self) -> None:
        self._values: dict[str, dict[str, bytes]] = defaultdict(dict)
        self._lists: dict[str, dict[str, list[bytes]]] = defaultdict(lambda: defaultdict(list))
        self._locks: dict[str, dict[str, threading.Lock]] = defaultdict(lambda: defaultdict(threading.Lock))

    def get(self, stream_id: str, key: str) -> bytes | None:
        return self._values[stream_id].get(key)

    def get_many(self, stream_id: str, keys: list[str]) -> list[bytes | None]:
        values = self._values[stream_id]
        return [values.get(key) for key in keys]

    def set(self, stream_id: str, values: Mapping[str, bytes]) -> None:
        self._values[stream_id].update(values)

    def set_once(self, stream_id: str, key: str, value: bytes) -> bool:
        if key in self._values[stream_id]:
            return False
        self._values[stream_id][key] = value
        return True

    def append(self, stream_id: str, key: str, value: bytes) -> int:
        items = self._lists[stream_id][key]
        items.append(value)
        return len(items)

    def items(self, stream_id: str, key: str, start: int = 0) -> list[bytes]:
        return list(self._lists[stream_id][key][start:])

    @contextlib.contextmanager
    def lock(self, stream_id: str, stage: str) -> Iterator[None]:
        with self._locks[stream_id][stage]:
            yield

    def delete(self, stream_id: str) -> None:
        self._values.pop(stream_id, None)
        self._lists.pop(stream_id, None)
        self._locks.pop(stream_id, None)
