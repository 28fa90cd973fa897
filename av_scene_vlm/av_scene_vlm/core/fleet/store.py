"""The fleet index on disk: a LanceDB database (a local directory or an object-store URI).

Tables: `frames` (one row per indexed frame), `bags` (one row per completely indexed bag), `meta`
(one row: the model, embedding size, tasks and scene events the index was built with) and, with
events, `events` (their intervals: `core.fleet.events`).

Why `bags`: a bag's frames are committed in chunks while it streams, and only when the last chunk
is in does its `bags` row mark it complete. A run that dies midway leaves rows of a bag without a
`bags` row; the next run deletes those before indexing the bag again, so a resumed run never
duplicates a frame, and a complete bag (same content hash) is skipped. Searches skip such rows
(`incomplete_hashes`) until then.

Killed at any moment (SIGKILL, power cut): every LanceDB write is one atomic commit, so a table is
at its last committed version; `meta` is written last when an index is created, and a table whose
creation was cut short (a directory without a committed version, which LanceDB lists but cannot
open) is taken as absent and created again — it holds nothing to lose.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import FleetError, StorageError, require

FRAMES, BAGS, META = "frames", "bags", "meta"
SCHEMA_VERSION = 1
# Columns every index has; task columns come after them (`<task>`, `<task>_prob`).
BASE_COLUMNS = ("bag", "bag_hash", "topic", "stamp", "frame_id", "bag_time", "vector", "caption", "thumbnail")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
ANN_MIN_ROWS = 100_000  # below: exact search; at or above: an ANN index is built automatically
ANN_MIN_TRAIN_ROWS = 256  # PQ codebooks need at least this many rows


@dataclass
class IndexInfo:
    """What an index was built with; a run with another model or other tasks is refused."""

    model_id: str
    dim: int
    tasks: dict[str, list[str]]  # task -> labels
    templates: list[str] = field(default_factory=list)
    events: str = ""  # scene events (canonical YAML, `core.events.events_yaml`); "" = none
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def task_columns(self) -> list[str]:
        return [c for t in self.tasks for c in (t, f"{t}_prob")]


def check_task_names(names: Sequence[str]) -> None:
    """Task names become SQL columns (for --where): lower-case identifiers, not a base column."""
    for name in names:
        if not _IDENT.match(name):
            raise FleetError(
                f"task name '{name}' cannot be an index column: use lower-case letters, digits and '_' "
                "(it is used in --where filters)"
            )
        if name in BASE_COLUMNS or (name.endswith("_prob") and name[:-5] in names):
            raise FleetError(f"task name '{name}' clashes with an index column; rename the task")


def _schema(pa: Any, info: IndexInfo) -> Any:
    fields = [
        pa.field("bag", pa.string()),
        pa.field("bag_hash", pa.string()),
        pa.field("topic", pa.string()),
        pa.field("stamp", pa.int64()),  # header stamp, ns
        pa.field("frame_id", pa.string()),
        pa.field("bag_time", pa.int64()),  # record time, ns
        pa.field("vector", pa.list_(pa.float32(), info.dim)),
    ]
    for task in info.tasks:
        fields += [pa.field(task, pa.string()), pa.field(f"{task}_prob", pa.float32())]
    fields += [pa.field("caption", pa.string()), pa.field("thumbnail", pa.binary())]
    return pa.schema(fields)


class FleetIndex:
    """An opened index: the three tables, buffered appends, bag completion, ANN index upkeep."""

    def __init__(self, uri: str, db: Any, info: IndexInfo, *, commit_rows: int = 1024) -> None:
        self.uri = uri
        self.db = db
        self.info = info
        self.commit_rows = max(1, int(commit_rows))
        self.pa = require("pyarrow")
        self.schema = _schema(self.pa, info)
        self.frames = _open_or_create(db, FRAMES, self.schema)
        self.bags = _open_or_create(db, BAGS, self._bags_schema())
        self.event_log: Any = None  # `fleet.events.EventLog` while an index run records scene events
        self._pending: list[Any] = []
        self._pending_rows = 0

    # ---- opening --------------------------------------------------------------------------------
    @staticmethod
    def _connect(uri: str, storage_options: dict | None) -> Any:
        lancedb = require("lancedb")
        try:
            return lancedb.connect(uri, storage_options=storage_options)
        except OSError as exc:  # e.g. a read-only directory
            raise StorageError(f"cannot open index '{uri}': {exc}") from None
        except Exception as exc:
            raise FleetError(f"cannot open index '{uri}': {exc}") from None

    @classmethod
    def open(cls, uri: str, *, storage_options: dict | None = None) -> FleetIndex:
        """An existing index (FleetError when `uri` holds none)."""
        db = cls._connect(str(uri), storage_options)
        info = _read_info(db)
        if info is None:
            raise FleetError(f"'{uri}' is not a fleet index (build one with `av-scene-vlm index`)")
        return cls(str(uri), db, info)

    @classmethod
    def open_or_create(
        cls, uri: str, info: IndexInfo, *, storage_options: dict | None = None, commit_rows: int = 1024
    ) -> FleetIndex:
        """Open the index at `uri` for `info`'s model and tasks, creating it when new; FleetError when
        it holds embeddings of another model or other tasks (they must never be mixed)."""
        check_task_names(list(info.tasks))
        db = cls._connect(str(uri), storage_options)
        with _storage(uri, "create"):
            existing = _read_info(db)
            if existing is None:  # new: the tables first, `meta` last, so a cut-short creation is redone
                info.created = info.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                index = cls(str(uri), db, info, commit_rows=commit_rows)
                db.create_table(META, data=[{"info": json.dumps(asdict(info))}], mode="overwrite")
                return index
        check_compatible(str(uri), existing, info)
        with _storage(uri, "open"):
            return cls(str(uri), db, existing, commit_rows=commit_rows)

    def _bags_schema(self) -> Any:
        pa = self.pa
        return pa.schema(
            [
                pa.field("bag_hash", pa.string()),
                pa.field("bag", pa.string()),
                pa.field("frames", pa.int64()),
                pa.field("bad_frames", pa.int64()),
                pa.field("seconds", pa.float64()),
                pa.field("indexed_at", pa.string()),
            ]
        )

    # ---- bags -----------------------------------------------------------------------------------
    def completed(self) -> dict[str, str]:
        """bag content hash -> path, of every completely indexed bag."""
        t = self.bags.to_arrow()
        return dict(zip(t.column("bag_hash").to_pylist(), t.column("bag").to_pylist(), strict=True))

    def begin_bag(self, bag_hash: str) -> int:
        """Delete rows an interrupted run left for this bag; returns how many there were."""
        where = f"bag_hash = '{_hex(bag_hash)}'"
        if self.event_log is not None:
            self.event_log.forget(bag_hash)
        n = self.frames.count_rows(where)
        if n:
            with _storage(self.uri, "write"):
                self.frames.delete(where)
        return n

    def finish_bag(self, bag_hash: str, bag: str, frames: int, bad_frames: int, seconds: float) -> None:
        """Commit the bag's buffered rows and its event intervals, then mark it complete (in that order)."""
        self.flush()
        if self.event_log is not None:
            self.event_log.finish(bag_hash)
        row = {
            "bag_hash": bag_hash,
            "bag": bag,
            "frames": int(frames),
            "bad_frames": int(bad_frames),
            "seconds": float(seconds),
            "indexed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with _storage(self.uri, "write"):
            self.bags.add(self.pa.Table.from_pylist([row], schema=self._bags_schema()))

    def incomplete_hashes(self) -> list[str]:
        """Content hashes of bags that have rows but no `bags` row: being indexed by a run now, or
        left by one that died (the next run deletes them). Cheap when there are none: the row count
        then equals the frames the complete bags recorded, and nothing is scanned."""
        bags = self.bags.to_arrow()
        if self.count() == sum(bags.column("frames").to_pylist()):
            return []
        done = set(bags.column("bag_hash").to_pylist())
        hashes = self.frames.search().select(["bag_hash"]).limit(None).to_arrow().column("bag_hash")
        return sorted(_hex(h) for h in set(hashes.to_pylist()) - done)

    def abandon_bag(self, bag_hash: str) -> None:
        """After a storage failure: drop the buffered rows unwritten and try to delete the bag's
        committed ones (a full disk may refuse that too; searches skip them either way, and the next
        run deletes them)."""
        self._pending, self._pending_rows = [], 0
        with suppress(FleetError):
            self.begin_bag(bag_hash)

    def discard_bag(self, bag_hash: str) -> None:
        """Drop every row of a bag that failed midway (buffered and committed)."""
        self.flush()
        self.begin_bag(bag_hash)

    # ---- rows -----------------------------------------------------------------------------------
    def add(self, columns: dict[str, Any]) -> int:
        """Buffer rows given as columns; commits every `commit_rows`. Returns the rows committed now."""
        table = self.to_arrow(columns)
        if self.event_log is not None:
            self.event_log.record(columns)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        return self.flush() if self._pending_rows >= self.commit_rows else 0

    def flush(self) -> int:
        """Commit the buffered rows (one LanceDB version); returns how many."""
        if not self._pending:
            return 0
        table = self.pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        with _storage(self.uri, "write"):
            self.frames.add(table)
        return table.num_rows

    def to_arrow(self, columns: dict[str, Any]) -> Any:
        """Columns (lists or arrays) -> an Arrow table with the index schema."""
        pa = self.pa
        arrays = []
        for f in self.schema:
            values = columns.get(f.name)
            if f.name == "vector":
                vec = np.ascontiguousarray(np.asarray(values, np.float32))
                if vec.ndim != 2 or vec.shape[1] != self.info.dim:
                    raise FleetError(
                        f"embeddings of size {vec.shape[1:]} for an index of size {self.info.dim}"
                    )
                arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), self.info.dim))
            elif f.name == "caption":  # None, "" or NaN (Ray's numpy batches) = no caption
                texts = values if values is not None else [None] * len(columns["stamp"])
                arrays.append(pa.array([v if isinstance(v, str) and v else None for v in texts], pa.string()))
            else:
                arrays.append(
                    pa.array(list(values) if isinstance(values, np.ndarray) else values, type=f.type)
                )
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def count(self, where: str | None = None) -> int:
        return int(self.frames.count_rows(where) if where else self.frames.count_rows())

    # ---- ANN index ------------------------------------------------------------------------------
    def has_ann_index(self) -> bool:
        return any("vector" in list(getattr(i, "columns", [])) for i in self.frames.list_indices())

    def build_ann_index(
        self, *, num_partitions: int | None = None, num_sub_vectors: int | None = None
    ) -> None:
        """(Re)build the IVF-PQ index on `vector` (cosine); searches then re-rank with exact vectors."""
        n = self.count()
        if n < ANN_MIN_TRAIN_ROWS:
            raise FleetError(
                f"an ANN index needs at least 256 rows (the index has {n}); exact search is used"
            )
        parts = num_partitions or max(1, n // 4096)  # ~4k rows per partition (1M rows: 244)
        subs = num_sub_vectors or _sub_vectors(self.info.dim)
        index = require("lancedb.index")
        config = index.IvfPq(distance_type="cosine", num_partitions=parts, num_sub_vectors=subs)
        with _storage(self.uri, "index"):
            self.frames.create_index("vector", config=config, replace=True)

    def optimize(self) -> None:
        """Compact the small files of many appends and add new rows to an existing ANN index."""
        with _storage(self.uri, "compact"):
            self.frames.optimize()
            self.bags.optimize()

    def maybe_build_ann_index(self, force: bool | None, threshold: int = ANN_MIN_ROWS) -> bool:
        """Build the ANN index when forced, or (force None) when the index reaches `threshold` rows
        and has none yet; returns whether one was built."""
        if force is False or self.count() < ANN_MIN_TRAIN_ROWS:  # too few to train: exact search
            return False
        if force or (self.count() >= threshold and not self.has_ann_index()):
            self.build_ann_index()
            return True
        return False


def _sub_vectors(dim: int) -> int:
    """PQ sub-vectors: 8 dimensions each (512 -> 64) when that divides `dim`, else a divisor."""
    for width in (8, 4, 16, 2, 1):
        if dim % width == 0:
            return dim // width
    return 1


@contextmanager
def _storage(uri: str, what: str) -> Iterator[None]:
    """LanceDB storage failures of the block (disk full, read-only, I/O) as one-line StorageError."""
    try:
        yield
    except FleetError:
        raise
    except Exception as exc:
        text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        text = re.sub(r", /\S+\.rs:\d+:\d+$", "", text)  # the Rust source location of a lance error
        raise StorageError(f"cannot {what} index '{uri}': {text[:300]}") from None


def _tables(db: Any) -> set[str]:
    return set(db.list_tables().tables)


def _open(db: Any, name: str) -> Any | None:
    """The table `name`, or None when it does not exist — also when a run was killed while creating
    it: its directory is there but no version was ever committed, and LanceDB lists it yet cannot
    open it ("Table 'x' was not found"). Any other failure to open it is raised."""
    if name not in _tables(db):
        return None
    try:
        return db.open_table(name)
    except ValueError as exc:  # LanceDB's TableNotFound
        if "not found" in str(exc).lower():
            return None
        raise


def _open_or_create(db: Any, name: str, schema: Any) -> Any:
    """The table `name`; created (over a cut-short creation's leftovers) when it does not exist."""
    table = _open(db, name)
    if table is None:
        table = db.create_table(name, schema=schema, mode="overwrite")
    return table


def _hex(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]+", value):
        raise FleetError(f"not a content hash: {value!r}")
    return value


def _read_info(db: Any) -> IndexInfo | None:
    table = _open(db, META)
    if table is None:
        return None
    rows = table.to_arrow().column("info").to_pylist()
    if not rows:
        return None
    data = json.loads(rows[0])
    return IndexInfo(**data)


def check_compatible(uri: str, existing: IndexInfo, new: IndexInfo) -> None:
    """FleetError when `new` (this run) would mix another model's embeddings or other tasks in."""
    if existing.model_id != new.model_id or (new.dim and existing.dim != new.dim):
        raise FleetError(
            f"index '{uri}' holds embeddings of model '{existing.model_id}' ({existing.dim}-d); this run "
            f"uses '{new.model_id}' ({new.dim}-d). Embeddings of two models cannot be compared: "
            "use the index's model or another --db"
        )
    if existing.tasks != new.tasks:
        raise FleetError(
            f"index '{uri}' was built with tasks {json.dumps(existing.tasks)}; this run has "
            f"{json.dumps(new.tasks)}. Use the same --config/--labels or another --db"
        )
    if existing.events != new.events:
        raise FleetError(
            f"index '{uri}' was built with {'other scene events' if existing.events else 'no scene events'}"
            f"; this run has {'other ones' if new.events else 'none'}: bags indexed before would lack this "
            "run's intervals. Use the same --events or another --db"
        )
