"""The feedback folder: photos staff confirmed or corrected in the web demo, as a data source.

Layout (``serve.feedback_dir``, ``data/sources/feedback`` by default)::

    <label>/<sha256>.<ext>     the photo, its bytes exactly as uploaded (see below)
    .records/<sha256>.json     label, verdict, the answer judged, timestamps, earlier labels
    .staging/<sha256>.<ext>    a new photo's bytes until its record is written (transient)
    .locks/<sha256>.lock       one lock file per photo (fcntl), kept

``<label>`` is a class label as in the metadata's ``breed`` column, or ``not_a_dog`` /
``mixed``. Every source reader skips names starting with '.', so only labelled photos are seen.

**The bytes as uploaded** (not an RGB JPEG copy): the file's SHA-256 is then the hash the
prediction log recorded for the same upload (``image_sha256``), so corrections join the log;
nothing is re-encoded (no generation loss, the EXIF orientation stays for the one decoder,
which reads every accepted format in training too). The extension follows the format.

**Content-addressed:** the same photo twice is one file. A later correction wins: the record
takes the new label and keeps the earlier judgements in ``history``; the file moves folder.

**Crash safety.** The record is the truth and its atomic replacement is the commit point:

1. a photo the store does not hold yet is written to ``.staging`` (temp file in the same
   folder, fsync, ``os.replace``) — label folders never receive a partly written file;
2. the record is written the same way (commit);
3. the photo is *renamed* from ``.staging`` or its old label folder into the new one (one
   ``rename(2)`` on one file system: it is in exactly one place at every instant, never two
   and never none), and both folders are fsynced.

A crash before 2 leaves the old state (the unanswered request is lost, nothing else); a crash
between 2 and 3 leaves a committed record whose photo has not moved yet: :func:`reconcile`
(the server runs it at start-up, and every save runs it for its photo first) finishes the
move. Stale temp and staging files are removed there too. Until then a reader of the label
folders sees the photo under its previous label (one place, whole), so a reader that must
match the records exactly calls :func:`reconcile` first. A photo put in a label folder by hand
(no record) is left alone.

**Concurrency:** each save holds its photo's lock (``fcntl.flock`` on a file of its own, so
it excludes other threads as well as other processes); two concurrent corrections of one
photo are applied one after the other, the last wins, the first is in its history.

**Never a path from the client:** the label must be a known class, ``not_a_dog`` or
``mixed`` (:func:`resolve_label`) and a plain folder name; file names are hashes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from dogbreeds import hashing

log = logging.getLogger(__name__)

NOT_A_DOG = "not_a_dog"
MIXED = "mixed"
EXTRA_LABELS = (NOT_A_DOG, MIXED)
VERDICTS = ("correct", "wrong")
RECORDS, STAGING, LOCKS = ".records", ".staging", ".locks"
# Columns of read_corrections (the contract with `dogbreeds monitor`), then extras.
CORRECTION_COLUMNS = ["image_sha256", "label", "verdict", "model_version", "answer_status",
                      "answer_breed", "answer_probability", "answered_at", "corrected_at"]
EXTRA_COLUMNS = ["model_uri", "answer_novelty", "file", "earlier_judgements"]
# Extensions by Pillow format (photos.ACCEPTED_FORMATS); HEIC files report "HEIF".
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "HEIF": "heic",
              "GIF": "gif", "BMP": "bmp"}
# A label becomes a folder name: letters, digits, '_' and '-' only (Stanford's class labels,
# e.g. `Great_Dane`, `black-and-tan_coonhound`), never '.', '/' or empty.
_SAFE_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class FeedbackError(Exception):
    """The feedback folder cannot be used (not creatable, not writable, a damaged record)."""


@dataclass(frozen=True)
class Answer:
    """The answer being judged, as the server recorded it (never as a client says it was)."""

    model_uri: str | None
    model_version: str | None
    status: str
    breed: str | None
    probability: float | None
    novelty: float | None
    answered_at: datetime


def known_labels(classes: Collection[str]) -> list[str]:
    """What a photo may be labelled: the model's classes, then ``not_a_dog`` and ``mixed``."""
    return [*classes, *(label for label in EXTRA_LABELS if label not in classes)]


def resolve_label(verdict: str, label: str | None, answer: Answer,
                  classes: Collection[str]) -> str:
    """The label a judgement stores: the answered breed for ``correct``, the label picked for
    ``wrong``.

    Raises:
        ValueError: a verdict other than correct/wrong; ``correct`` of an answer that named no
            breed (``unknown``) or with another label; ``wrong`` without a label, with an
            unknown label, or with the answered breed itself. The message says what to send.
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be 'correct' or 'wrong', got {verdict!r}")
    label = (label or "").strip() or None
    if verdict == "correct":
        if answer.breed is None:
            raise ValueError("the model named no breed to confirm (it answered "
                             f"{answer.status!r}): send verdict=wrong with the right label "
                             f"(a breed, {NOT_A_DOG} or {MIXED})")
        if label is not None and label != answer.breed:
            raise ValueError(f"verdict=correct confirms the answer {answer.breed!r}, but "
                             f"label is {label!r}: send verdict=wrong to correct it")
        return answer.breed
    if label is None:
        raise ValueError(f"verdict=wrong needs the right label (a breed, {NOT_A_DOG} or {MIXED})")
    allowed = known_labels(classes)
    if label not in allowed:
        raise ValueError(f"unknown label {label!r}: pick one of the model's breeds, "
                         f"{NOT_A_DOG} or {MIXED}")
    if label == answer.breed:
        raise ValueError(f"{label!r} is what the model answered: send verdict=correct")
    return label


def checked_label(label: str) -> str:
    """``label`` if it is a plain folder name (defence in depth: labels are already known)."""
    if not _SAFE_LABEL.fullmatch(label):
        raise ValueError(f"label {label!r} cannot name a folder")
    return label


def extension(image_format: str) -> str:
    """The file extension for a Pillow format name (``JPEG`` → ``jpg``)."""
    try:
        return EXTENSIONS[image_format]
    except KeyError:
        raise ValueError(f"no feedback photo extension for format {image_format!r}") from None


def utc_now() -> datetime:
    return datetime.now(UTC)


# ----- atomic files ---------------------------------------------------------------------------

def _fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all or nothing: a temp file beside it (hidden, named after
    the target so :func:`reconcile` can sweep it), fsync, ``os.replace``, fsync the folder."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _move(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` (same file system: atomic) and make it durable."""
    target.parent.mkdir(exist_ok=True)
    os.rename(source, target)
    _fsync_dir(target.parent)
    if source.parent != target.parent:
        _fsync_dir(source.parent)


# ----- the store ------------------------------------------------------------------------------

class FeedbackStore:
    """The feedback folder (see the module docstring). :meth:`open` checks it first."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.records = self.folder / RECORDS
        self.staging = self.folder / STAGING
        self.locks = self.folder / LOCKS

    @classmethod
    def open(cls, folder: Path | str) -> FeedbackStore:
        """The store at ``folder``, created if needed, proven writable, crash leftovers
        settled (:meth:`reconcile`).

        Raises:
            FeedbackError: the folder cannot be created or written (checked by really writing
                a file: permission bits say nothing for root or on read-only mounts).
        """
        store = cls(folder)
        hint = ("choose another folder (--feedback-dir, serve.feedback_dir) or turn feedback "
                "off (--no-feedback)")
        try:
            store.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FeedbackError(f"feedback folder {store.folder} cannot be created "
                                f"({exc.strerror or exc}): {hint}") from exc
        probe = store.staging / f".probe-{uuid.uuid4().hex}"
        try:
            for sub in (store.records, store.staging, store.locks):
                sub.mkdir(exist_ok=True)
            atomic_write(probe, b"probe")
            probe.unlink()
        except OSError as exc:
            raise FeedbackError(f"feedback folder {store.folder} is not writable "
                                f"({exc.strerror or exc}): {hint}") from exc
        store.reconcile()
        return store

    # ----- paths and locks

    def record_path(self, sha: str) -> Path:
        return self.records / f"{sha}.json"

    def label_dirs(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(d for d in self.folder.iterdir()
                      if d.is_dir() and not d.name.startswith("."))

    @contextlib.contextmanager
    def locked(self, sha: str) -> Iterator[None]:
        """Hold photo ``sha``'s lock: excludes other threads and processes (flock on an open
        file description of its own)."""
        self.locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.locks / f"{sha}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def read_record(self, sha: str) -> dict[str, Any] | None:
        """Photo ``sha``'s record (None if it has none).

        Raises:
            FeedbackError: the record is not JSON or names a file that is not
                ``<label>/<sha>.<ext>`` (records are only ever replaced whole; this is a record
                edited by hand, and no path from it is followed).
        """
        path = self.record_path(sha)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as exc:
            raise FeedbackError(f"damaged feedback record {path}: {exc}") from exc
        label, _, name = str(record.get("file", "")).partition("/")
        if not (_SAFE_LABEL.fullmatch(label) and label == record.get("label")
                and name.split(".")[0] == sha and name.count(".") == 1):
            raise FeedbackError(f"damaged feedback record {path}: file {record.get('file')!r} "
                                f"is not <label>/{sha}.<ext>")
        return record

    # ----- saving

    def save(self, photo: bytes, image_format: str, label: str, verdict: str, answer: Answer,
             now: datetime | None = None) -> dict[str, Any]:
        """Store a judgement of ``photo`` (its bytes as uploaded); return its record.

        ``label`` must already be resolved (:func:`resolve_label`); it is checked to be a plain
        folder name all the same. A photo judged before keeps one file: the new label wins
        and the earlier judgement goes to the record's ``history``.
        """
        label = checked_label(label)
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be 'correct' or 'wrong', got {verdict!r}")
        sha = hashing.digest(photo)
        name = f"{sha}.{extension(image_format)}"
        with self.locked(sha):
            self._settle(sha)
            previous = self.read_record(sha)
            placed = self.folder / previous["file"] if previous else None
            if placed is None or not placed.is_file():
                placed = self.staging / name
                atomic_write(placed, photo)                                     # step 1
            record = _record(sha, f"{label}/{placed.name}", label, verdict, answer,
                             now or utc_now(), previous)
            atomic_write(self.record_path(sha),                                 # step 2
                         (json.dumps(record, indent=2) + "\n").encode("utf-8"))
            target = self.folder / record["file"]
            if placed != target:
                _move(placed, target)                                           # step 3
        return record

    # ----- crash recovery

    def reconcile(self) -> dict[str, int]:
        """Settle every photo after a crash: committed records get their photo in their label
        folder, uncommitted staging and temp files are removed. Returns what was done. A
        damaged record is logged and its photo left as it is."""
        shas = {p.stem for p in self.records.glob("*.json")} if self.records.is_dir() else set()
        for folder in (self.records, self.staging):
            if folder.is_dir():
                shas |= {_sha_of(p.name) for p in folder.iterdir()} - {None}
        counts = {"moved": 0, "removed": 0}
        for sha in sorted(shas):
            with self.locked(sha):
                try:
                    settled = self._settle(sha)
                except FeedbackError:  # hand-edited: say so, leave it, settle the others
                    log.exception("feedback folder %s: photo %s left as it is", self.folder, sha)
                    continue
            for key, n in settled.items():
                counts[key] += n
        if any(counts.values()):
            log.warning("feedback folder %s: settled after an interruption: %s", self.folder,
                        counts)
        return counts

    def _settle(self, sha: str) -> dict[str, int]:
        """Bring photo ``sha`` to its record's state (call with its lock held)."""
        moved = removed = 0
        for folder in (self.records, self.staging):
            for tmp in folder.glob(f".{sha}.*.tmp") if folder.is_dir() else ():
                tmp.unlink(missing_ok=True)
                removed += 1
        staged = sorted(self.staging.glob(f"{sha}.*")) if self.staging.is_dir() else []
        record = self.read_record(sha)
        if record is None:  # never committed: staged bytes were not acknowledged to anyone
            for path in staged:
                path.unlink()
                removed += 1
            return {"moved": moved, "removed": removed}
        target = self.folder / record["file"]
        copies = [p for d in self.label_dirs() for p in d.glob(f"{sha}.*")] + staged
        if not target.is_file():
            source = next((p for p in copies if p != target), None)
            if source is None:
                log.error("feedback photo %s is missing (record %s)", target,
                          self.record_path(sha))
            else:
                _move(source, target)
                moved += 1
        for path in copies:  # same bytes elsewhere (by name): the record says where it lives
            if path != target and path.exists() and target.is_file():
                path.unlink()
                removed += 1
        return {"moved": moved, "removed": removed}


def _sha_of(name: str) -> str | None:
    """The photo hash a store file name carries (``<sha>.jpg``, ``.<sha>.json.<id>.tmp``)."""
    head = name.lstrip(".").split(".", 1)[0]
    return head if _SHA256.fullmatch(head) else None


def _judgement(label: str, verdict: str, answer: Answer, corrected_at: datetime
               ) -> dict[str, Any]:
    return {"label": label, "verdict": verdict, "model_uri": answer.model_uri,
            "model_version": answer.model_version, "answer_status": answer.status,
            "answer_breed": answer.breed, "answer_probability": answer.probability,
            "answer_novelty": answer.novelty,
            "answered_at": answer.answered_at.astimezone(UTC).isoformat(),
            "corrected_at": corrected_at.astimezone(UTC).isoformat()}


def _record(sha: str, file: str, label: str, verdict: str, answer: Answer, now: datetime,
            previous: dict[str, Any] | None) -> dict[str, Any]:
    """The record after this judgement: the latest one flat, the earlier ones in history."""
    history: list[dict[str, Any]] = []
    if previous is not None:
        history = [*previous.get("history", []),
                   {k: previous[k] for k in _judgement_keys()}]
    return {"image_sha256": sha, "file": file, **_judgement(label, verdict, answer, now),
            "history": history}


def _judgement_keys() -> list[str]:
    return ["label", "verdict", "model_uri", "model_version", "answer_status", "answer_breed",
            "answer_probability", "answer_novelty", "answered_at", "corrected_at"]


# ----- reading --------------------------------------------------------------------------------

def read_records(folder: Path | str) -> list[dict[str, Any]]:
    """Every photo's record (latest judgement + history), in hash order."""
    store = FeedbackStore(folder)
    if not store.records.is_dir():
        return []
    return [store.read_record(path.stem) for path in sorted(store.records.glob("*.json"))]


def read_corrections(folder: Path | str) -> pd.DataFrame:
    """One row per photo judged in the web demo, its latest label.

    Columns: ``image_sha256, label, verdict ('correct'|'wrong'), model_version,
    answer_status, answer_breed, answer_probability, answered_at, corrected_at`` (UTC
    tz-aware), then ``model_uri, answer_novelty, file`` (relative to ``folder``) and
    ``earlier_judgements`` (how many the latest replaced). A folder that does not exist yet
    has no corrections (an empty frame). Reads the records only: it never writes.
    """
    rows = [{**{k: r.get(k) for k in CORRECTION_COLUMNS + EXTRA_COLUMNS[:3]},
             "earlier_judgements": len(r.get("history", []))} for r in read_records(folder)]
    frame = pd.DataFrame(rows, columns=CORRECTION_COLUMNS + EXTRA_COLUMNS)
    for column in ("answered_at", "corrected_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    for column in ("answer_probability", "answer_novelty"):
        frame[column] = frame[column].astype("float64")
    frame["earlier_judgements"] = frame["earlier_judgements"].astype("int64")
    return frame


def reconcile(folder: Path | str) -> dict[str, int]:
    """Settle a feedback folder after a crash (see :meth:`FeedbackStore.reconcile`); a missing
    folder has nothing to settle. For a reader that wants the label folders exact first."""
    store = FeedbackStore(folder)
    return store.reconcile() if store.folder.is_dir() else {"moved": 0, "removed": 0}
