"""Per-stream state that stages keep outside themselves, so any worker can serve any patch and a
restarted worker loses nothing (DESIGN §2): small values by key, and append-only lists of blobs.
Each operation also comes for several streams at once (`*_each`), one round trip for all of them: a
stage call handles several streams, and on a busy server every round trip costs a few ms of waiting
to be scheduled, so they are counted per call, not per stream.

`MemoryStateStore` backs embedded mode; `redis_streams.RedisStateStore` backs service mode.
"""

import contextlib
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

CLOSED = "closed"
"""Set in a stream's values by `StateStore.delete`: the stream is over (its client went away or was
refused), and a message of it still in flight must not start it again. The stages that keep state
read it with their lock and drop such a stream."""


@dataclass
class Section:
    """What a locked section (`StateStore.lock_each`) sees of the store: `values`, read in the round
    trip that took the locks, and writes that go in the round trip that gives them back, applied only
    if the section completes. A stage call's first read and last write cost no round trip of their own."""

    values: dict[str, list[bytes | None]] = field(default_factory=dict)
    """stream -> the values of the keys `read` named, in their order."""
    writes: dict[str, dict[str, bytes]] = field(default_factory=dict)
    removals: dict[str, list[str]] = field(default_factory=dict)

    def set_each(self, values: Mapping[str, Mapping[str, bytes]]) -> None:
        """`StateStore.set_each` at the release: the section's reads do not see these values."""
        for stream, stream_values in values.items():
            self.writes.setdefault(stream, {}).update(stream_values)

    def unset_each(self, keys: Mapping[str, Sequence[str]]) -> None:
        """`StateStore.unset_each` at the release, after the writes."""
        for stream, names in keys.items():
            self.removals.setdefault(stream, []).extend(names)


class StateStore(Protocol):
    def get(self, stream_id: str, key: str) -> bytes | None: ...

    def get_many(self, stream_id: str, keys: list[str]) -> list[bytes | None]:
        """`get` of each key, in one round trip."""
        ...

    def get_each(self, keys: Mapping[str, Sequence[str]]) -> dict[str, list[bytes | None]]:
        """`get_many` of each stream (stream -> its keys), in one round trip."""
        ...

    def set(self, stream_id: str, values: Mapping[str, bytes]) -> None:
        """Set every key of `values`, in one round trip and all at once."""
        ...

    def set_each(self, values: Mapping[str, Mapping[str, bytes]]) -> None:
        """`set` of each stream (stream -> its values), in one round trip and all at once."""
        ...

    def unset_each(self, keys: Mapping[str, Sequence[str]]) -> None:
        """Remove these keys of each stream (stream -> its keys), in one round trip."""
        ...

    def set_once(self, stream_id: str, key: str, value: bytes) -> bool:
        """Set `key` only if it is unset; True if this call set it (an emit-once guard)."""
        ...

    def set_once_each(self, items: Sequence[tuple[str, str, bytes]]) -> list[bool]:
        """`set_once` of each (stream, key, value), in order, in one round trip."""
        ...

    def append(self, stream_id: str, key: str, value: bytes) -> int:
        """Append to the list `key`; returns its new length."""
        ...

    def append_each(self, key: str, values: Mapping[str, bytes]) -> dict[str, int]:
        """`append` to each stream's list `key` (stream -> value), in one round trip."""
        ...

    def items(self, stream_id: str, key: str, start: int = 0) -> list[bytes]:
        """The list `key` from position `start` on."""
        ...

    def items_each(self, key: str, starts: Mapping[str, int]) -> dict[str, list[bytes]]:
        """`items` of each stream's list `key` (stream -> start), in one round trip."""
        ...

    def lock(self, stream_id: str, stage: str) -> contextlib.AbstractContextManager[Section]:
        """Exclusive per-stream section of one stage: one worker of the stage at a time advances a
        stream. Stages keep disjoint keys, so one stage's section does not wait for another's (the
        LM planning a stream's patch while the video encoder encodes its next frames)."""
        ...

    def lock_each(
        self,
        streams: Sequence[str],
        stage: str,
        file: Sequence[tuple[str, str, bytes]] = (),
        read: Mapping[str, Sequence[str]] | None = None,
    ) -> contextlib.AbstractContextManager[Section]:
        """`lock` of every stream in `streams`, all of them held at once; no deadlock between
        workers whose sets of streams overlap. In the same round trip: `set_once_each(file)` first,
        then `get_each(read)` under the locks, into `Section.values`."""
        ...

    def delete(self, stream_id: str) -> None:
        """Forget the stream, keeping only its `CLOSED` mark (until it expires, as any value)."""
        ...


class MemoryStateStore:
    def __init__(self) -> None:
        self._values: dict[str, dict[str, bytes]] = defaultdict(dict)
        self._lists: dict[str, dict[str, list[bytes]]] = defaultdict(lambda: defaultdict(list))
        self._locks: dict[str, dict[str, threading.Lock]] = defaultdict(lambda: defaultdict(threading.Lock))

    def get(self, stream_id: str, key: str) -> bytes | None:
        return self._values[stream_id].get(key)

    def get_many(self, stream_id: str, keys: list[str]) -> list[bytes | None]:
        return self.get_each({stream_id: keys})[stream_id]

    def get_each(self, keys: Mapping[str, Sequence[str]]) -> dict[str, list[bytes | None]]:
        return {stream: [self._values[stream].get(key) for key in names] for stream, names in keys.items()}

    def set(self, stream_id: str, values: Mapping[str, bytes]) -> None:
        self.set_each({stream_id: values})

    def set_each(self, values: Mapping[str, Mapping[str, bytes]]) -> None:
        for stream, stream_values in values.items():
            self._values[stream].update(stream_values)

    def unset_each(self, keys: Mapping[str, Sequence[str]]) -> None:
        for stream, names in keys.items():
            for key in names:
                self._values[stream].pop(key, None)

    def set_once(self, stream_id: str, key: str, value: bytes) -> bool:
        return self.set_once_each([(stream_id, key, value)])[0]

    def set_once_each(self, items: Sequence[tuple[str, str, bytes]]) -> list[bool]:
        done = []
        for stream, key, value in items:
            done.append(key not in self._values[stream])
            self._values[stream].setdefault(key, value)
        return done

    def append(self, stream_id: str, key: str, value: bytes) -> int:
        return self.append_each(key, {stream_id: value})[stream_id]

    def append_each(self, key: str, values: Mapping[str, bytes]) -> dict[str, int]:
        lengths = {}
        for stream, value in values.items():
            items = self._lists[stream][key]
            items.append(value)
            lengths[stream] = len(items)
        return lengths

    def items(self, stream_id: str, key: str, start: int = 0) -> list[bytes]:
        return self.items_each(key, {stream_id: start})[stream_id]

    def items_each(self, key: str, starts: Mapping[str, int]) -> dict[str, list[bytes]]:
        return {stream: list(self._lists[stream][key][start:]) for stream, start in starts.items()}

    def lock(self, stream_id: str, stage: str) -> contextlib.AbstractContextManager[Section]:
        return self.lock_each([stream_id], stage)

    @contextlib.contextmanager
    def lock_each(
        self,
        streams: Sequence[str],
        stage: str,
        file: Sequence[tuple[str, str, bytes]] = (),
        read: Mapping[str, Sequence[str]] | None = None,
    ) -> Iterator[Section]:
        self.set_once_each(file)
        with contextlib.ExitStack() as locked:
            for stream in sorted(set(streams)):  # one order for every thread: no deadlock
                locked.enter_context(self._locks[stream][stage])
            section = Section(self.get_each(read or {}))
            yield section
            self.set_each(section.writes)
            self.unset_each(section.removals)

    def delete(self, stream_id: str) -> None:
        self._values[stream_id] = {CLOSED: b"1"}
        self._lists.pop(stream_id, None)
        self._locks.pop(stream_id, None)
