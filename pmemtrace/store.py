"""The record file: one SQLite file (stdlib sqlite3), schema version in `meta`.

Tables (schema 1):
  meta(key, value)                       format = "pmemtrace-record", schema = 1, started (epoch s),
                                         options (JSON), kernel, frame_zdict (see below)
  intervals(seq, time, interval,         one row per interval: the frame `top --json` prints, as JSON
            lost_events, thp_fault_alloc, compressed with zlib using the first frame as preset
            thp_fault_fallback, frame)   dictionary (meta frame_zdict): ~120 bytes instead of ~7 KB for
                                         a -p frame; the plain columns are there for SQL
  snapshots(id, seq, time, pid, comm,    the `report --json` document of a watched process, zlib-compressed
            digest, report)              JSON, stored only when its VMAs (or their bytes) changed
  policy(seq, time, policy)              pmemtrace.policy.read(), stored at the start and when it changed

Crash safety: every interval is one transaction, appended to FILE-wal while recording (WAL mode,
synchronous=NORMAL: no fsync per interval); `kill -9` loses at most the interval being written,
and the next open replays the committed ones from FILE-wal. A clean stop folds the WAL back
into FILE (rollback-journal mode): one self-contained file.
Writer and Reader are the only code that knows the tables.
"""
import datetime
import hashlib
import json
import os
import sqlite3
import urllib.parse
import zlib
from typing import Dict, Iterator, List, Optional, Tuple

from .errors import BadInputFile, BadOutputFile, OutputExists

FORMAT = "pmemtrace-record"
SCHEMA = 1

DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE intervals (seq INTEGER PRIMARY KEY, time REAL NOT NULL, interval REAL, lost_events INTEGER,
                        thp_fault_alloc INTEGER, thp_fault_fallback INTEGER, frame BLOB NOT NULL);
CREATE TABLE snapshots (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, time REAL NOT NULL, pid INTEGER NOT NULL,
                        comm TEXT, digest TEXT NOT NULL, report BLOB NOT NULL);
CREATE INDEX snapshots_by_time ON snapshots (time, pid);
CREATE TABLE policy (seq INTEGER PRIMARY KEY, time REAL NOT NULL, policy TEXT NOT NULL);
"""


def vma_digest(doc: dict) -> str:
    """What makes a snapshot new: the VMAs and their bytes, not the time it was taken."""
    return hashlib.sha1(json.dumps(doc.get("vmas"), sort_keys=True).encode()).hexdigest()


def check_output(path: str, force: bool) -> None:
    """record -o: refuse an existing FILE (exit 18) unless --force; a directory is never replaced."""
    if os.path.isdir(path):
        raise BadOutputFile(f"cannot write the record file {path}: it is a directory")
    if os.path.lexists(path) and not force:
        raise OutputExists(f"{path} exists: give another -o FILE, or --force to replace it")


class Writer:
    def __init__(self, path: str, options: dict, kernel_release: str, started: float, force: bool = False):
        check_output(path, force)
        try:
            if force and os.path.lexists(path):
                os.unlink(path)
            # O_EXCL: a file that appeared since check_output is refused too, never overwritten
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            raise OutputExists(f"{path} exists: give another -o FILE, or --force to replace it") from None
        except OSError as e:
            raise BadOutputFile(f"cannot write the record file {path}: {e.strerror}") from None
        try:
            self.db = sqlite3.connect(path)
            # WAL while recording: a commit appends to FILE-wal without an fsync (a rollback journal
            # costs ~0.3-1 ms of CPU an interval in journal create/sync/delete, more than top's whole
            # frame output); readers (replay while recording) never block the writer
            self.db.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as e:
            raise BadOutputFile(f"cannot write the record file {path}: {e}") from None
        self.path = path
        # NORMAL in WAL mode: a killed recorder loses nothing committed (the WAL is replayed on the
        # next open); a power cut may lose the last intervals, never corrupt the file
        self.db.execute("PRAGMA synchronous=NORMAL")
        with self.db:
            self.db.executescript(DDL)
            self.db.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("format", FORMAT), ("schema", str(SCHEMA)), ("started", repr(started)),
                ("options", json.dumps(options)), ("kernel", kernel_release)])
        self.seq = 0
        self.zdict: Optional[bytes] = None
        self.last_digest: Dict[int, str] = {}
        self.last_policy: Optional[dict] = None
        self.snapshots_written = 0

    def write_interval(self, t: float, frame: dict, reports: Dict[int, dict], policy: dict) -> None:
        """One interval, atomically: the frame, the snapshots that changed, the policy if it changed."""
        try:
            self._write_interval(t, frame, reports, policy)
        except sqlite3.Error as e:
            raise BadOutputFile(f"cannot write the record file {self.path}: {e}") from None

    def _write_interval(self, t: float, frame: dict, reports: Dict[int, dict], policy: dict) -> None:
        self.seq += 1
        text = json.dumps(frame).encode()
        vm = (frame.get("system") or {}).get("vmstat") or {}
        with self.db:
            if self.zdict is None:
                self.db.execute("INSERT INTO meta VALUES ('frame_zdict', ?)", (text.decode(),))
            c = zlib.compressobj(6, zdict=self.zdict or text)
            self.db.execute("INSERT INTO intervals VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (self.seq, t, frame.get("interval"), frame.get("lost_events"),
                             vm.get("thp_fault_alloc"), vm.get("thp_fault_fallback"), c.compress(text) + c.flush()))
            if policy != self.last_policy:
                self.db.execute("INSERT INTO policy VALUES (?, ?, ?)", (self.seq, t, json.dumps(policy)))
            for pid, doc in sorted(reports.items()):
                digest = vma_digest(doc)
                if self.last_digest.get(pid) == digest:
                    continue
                doc = {k: v for k, v in doc.items() if k != "policy"}     # kept once, in the policy table
                self.db.execute("INSERT INTO snapshots (seq, time, pid, comm, digest, report) VALUES (?,?,?,?,?,?)",
                                (self.seq, t, pid, doc.get("comm"), digest,
                                 zlib.compress(json.dumps(doc).encode(), 6)))
                self.snapshots_written += 1
        # only once committed: a failed transaction must not make the next interval skip a snapshot
        self.zdict = self.zdict or text
        self.last_policy = policy
        for pid, doc in reports.items():
            self.last_digest[pid] = vma_digest(doc)

    def size(self) -> int:
        """Bytes on disk: FILE and, while recording, FILE-wal."""
        wal = self.path + "-wal"
        return os.path.getsize(self.path) + (os.path.getsize(wal) if os.path.exists(wal) else 0)

    def close(self) -> None:
        """Fold the WAL into FILE and leave one self-contained file (rollback-journal mode)."""
        try:
            self.db.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error:
            pass                    # a reader holds it open: FILE-wal stays, any open folds it in
        self.db.close()


def parse_at(at: Optional[str], started: float) -> Optional[float]:
    """--at: seconds from the start of the recording ("30", "1.5"), or an ISO time."""
    if at is None:
        return None
    try:
        return started + float(at)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(at)
    except ValueError:
        raise BadInputFile(f"--at {at!r}: give seconds from the start of the recording or an ISO time") from None
    if when.tzinfo is None:
        when = when.astimezone()
    return when.timestamp()


class Reader:
    """A record file, checked on open: a truncated, corrupt or foreign file raises BadInputFile."""

    def __init__(self, path: str):
        self.path = path
        if not os.path.isfile(path):
            raise BadInputFile(f"{path}: no such record file")
        try:
            # read-write (never create): a hot journal left by kill -9 is rolled back on open;
            # a file this user may only read is opened read-only
            mode = "rw" if os.access(path, os.W_OK) and os.access(os.path.dirname(os.path.abspath(path)), os.W_OK) \
                else "ro"
            self.db = sqlite3.connect(f"file:{urllib.parse.quote(os.path.abspath(path))}?mode={mode}", uri=True)
            self.meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
            self.db.execute("SELECT count(*) FROM intervals").fetchone()
            self.db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as e:
            raise BadInputFile(f"{path}: not a readable pmemtrace record file ({e})") from None
        if self.meta.get("format") != FORMAT:
            raise BadInputFile(f"{path}: an SQLite file, but not a pmemtrace record file")
        try:
            schema = int(self.meta.get("schema", "0"))
        except ValueError:
            schema = 0
        if schema != SCHEMA:
            raise BadInputFile(f"{path}: record schema {self.meta.get('schema')}; this pmemtrace reads {SCHEMA}")
        self.started = float(self.meta.get("started", "0"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.db.close()

    def _query(self, sql: str, args: tuple = ()) -> list:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise BadInputFile(f"{self.path}: damaged record file ({e})") from None

    @property
    def options(self) -> dict:
        return json.loads(self.meta.get("options", "{}"))

    def frames(self, until: Optional[float] = None) -> Iterator[Tuple[int, float, dict]]:
        rows = self._query("SELECT seq, time, frame FROM intervals WHERE time <= ? ORDER BY seq",
                           (until if until is not None else float("inf"),))
        zdict = self.meta.get("frame_zdict", "").encode()
        for seq, t, blob in rows:
            try:
                d = zlib.decompressobj(zdict=zdict)
                yield seq, t, json.loads(d.decompress(blob) + d.flush())
            except (zlib.error, ValueError):
                raise BadInputFile(f"{self.path}: a damaged frame (interval {seq})") from None

    def interval_count(self) -> int:
        return self._query("SELECT count(*) FROM intervals")[0][0]

    def policy_at(self, t: float) -> dict:
        rows = self._query("SELECT policy FROM policy WHERE time <= ? ORDER BY seq DESC LIMIT 1", (t,))
        if not rows:
            rows = self._query("SELECT policy FROM policy ORDER BY seq LIMIT 1")
        return json.loads(rows[0][0]) if rows else {}

    def snapshots(self) -> List[Tuple[float, int, dict]]:
        """Every stored snapshot, (time, pid, report document), in time order."""
        rows = self._query("SELECT time, pid, report FROM snapshots ORDER BY time, pid")
        return [(t, pid, self._decode(blob)) for t, pid, blob in rows]

    def _decode(self, blob: bytes) -> dict:
        try:
            return json.loads(zlib.decompress(blob))
        except (zlib.error, ValueError):
            raise BadInputFile(f"{self.path}: a damaged snapshot") from None

    def vma_faults(self, at: Optional[str], pid: int) -> Dict[int, Dict[str, Optional[int]]]:
        """{VMA start: report --duration's fault columns} summed over the frames up to --at (default:
        all) of a `record -p PID` run (its frames carry top -p's per-VMA rows); {} for other runs.
        A count a frame could not know (null) makes the sum unknown (None)."""
        t = parse_at(at, self.started)
        out: Dict[int, Dict[str, Optional[int]]] = {}
        for _, _, frame in self.frames(t):
            if frame.get("pid") != pid:
                continue
            for row in frame.get("vmas") or ():
                start = row.get("start")
                if not isinstance(start, int):
                    continue
                dax = row.get("dax_faults") or {}
                cols = {"faults": row.get("faults"), "huge_faults": row.get("huge_faults"),
                        "dax_pmd_faults": dax.get("pmd_huge", 0),
                        "dax_pte_faults": dax.get("pte", 0) + dax.get("pte_needdsync", 0),
                        "dax_fallbacks": dax.get("pmd_fallback", 0),
                        "dax_needdsync": dax.get("pmd_needdsync", 0) + dax.get("pte_needdsync", 0)}
                acc = out.get(start)
                if acc is None:
                    out[start] = cols
                    continue
                for k, n in cols.items():
                    a = acc[k]
                    acc[k] = None if a is None or n is None else a + n
        return out

    def report_at(self, at: Optional[str] = None, pid: Optional[int] = None) -> dict:
        """The report document of pid (default: the largest RSS) in force at --at (default: the end)."""
        t = parse_at(at, self.started)
        limit = t if t is not None else float("inf")
        rows = self._query("SELECT s.pid, s.time, s.report FROM snapshots s JOIN (SELECT pid, max(time) AS t "
                           "FROM snapshots WHERE time <= ? GROUP BY pid) last ON s.pid = last.pid AND "
                           "s.time = last.t", (limit,))
        docs = {p: (when, self._decode(blob)) for p, when, blob in rows}
        if pid is not None and pid not in docs:
            raise BadInputFile(f"{self.path}: no snapshot of pid {pid}"
                               + (f" at or before {at}" if at else "") + f" (recorded: {sorted(docs) or 'none'})")
        if not docs:
            raise BadInputFile(f"{self.path}: no VMA snapshot" + (f" at or before {at}" if at else ""))
        if pid is None:
            pid = max(docs, key=lambda p: (sum(v.get("rss_bytes") or 0 for v in docs[p][1]["vmas"]), -p))
        doc = docs[pid][1]
        doc["policy"] = self.policy_at(limit)        # the snapshot stands until the next: so does the policy
        return doc
