"""The feedback folder on a real file system: content-addressed photos, a later correction
winning with its history, labels that cannot become paths, concurrent corrections (threads and
processes, fcntl locks) and a writer killed with SIGKILL mid-write (nothing half-written)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from dogbreeds import hashing
from dogbreeds.data import feedback
from dogbreeds.data.feedback import Answer, FeedbackError, FeedbackStore
from support import tiny_models as tm
from support.project import venv_env

CLASSES = tm.CLASSES  # Chihuahua, golden_retriever, papillon
ANSWERED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def answer(breed: str | None = "papillon", status: str = "ok", version: str = "3") -> Answer:
    return Answer(model_uri="models:/dogbreeds@champion", model_version=version, status=status,
                  breed=breed, probability=None if breed is None else 0.81, novelty=0.4,
                  answered_at=ANSWERED)


def visible_copies(folder: Path, sha: str) -> list[str]:
    """Where photo ``sha`` shows in label folders (what a source reader sees)."""
    return sorted(str(p.relative_to(folder)) for p in folder.glob(f"*/{sha}.*")
                  if not p.parent.name.startswith("."))


def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for sub in (".records", ".staging") for p in (folder / sub).iterdir()
                  if p.name.endswith(".tmp") or sub == ".staging")


@pytest.fixture
def store(tmp_path) -> FeedbackStore:
    return FeedbackStore.open(tmp_path / "feedback")


# ----- what is stored --------------------------------------------------------------------------

def test_a_judgement_stores_the_bytes_as_sent_the_label_and_the_answer(store):
    photo = tm.breed_jpeg("papillon")
    record = store.save(photo, "JPEG", "papillon", "correct", answer(),
                        now=ANSWERED + timedelta(minutes=2))
    sha = hashing.digest(photo)
    assert record["file"] == f"papillon/{sha}.jpg"
    assert (store.folder / "papillon" / f"{sha}.jpg").read_bytes() == photo
    on_disk = json.loads((store.folder / ".records" / f"{sha}.json").read_text())
    assert on_disk == record
    assert (on_disk["label"], on_disk["verdict"], on_disk["model_version"],
            on_disk["answer_breed"], on_disk["answer_probability"]) == (
        "papillon", "correct", "3", "papillon", 0.81)
    assert on_disk["answered_at"] == "2025-03-01T12:00:00+00:00"
    assert on_disk["corrected_at"] == "2025-03-01T12:02:00+00:00"
    assert on_disk["history"] == []
    assert hidden_leftovers(store.folder) == []


def test_the_same_photo_twice_is_one_file(store):
    photo = tm.breed_jpeg("Chihuahua")
    first = store.save(photo, "JPEG", "Chihuahua", "correct", answer("Chihuahua"))
    second = store.save(photo, "JPEG", "Chihuahua", "correct", answer("Chihuahua"))
    sha = hashing.digest(photo)
    assert visible_copies(store.folder, sha) == [f"Chihuahua/{sha}.jpg"]
    assert first["file"] == second["file"]
    assert [h["label"] for h in second["history"]] == ["Chihuahua"]
    assert len(feedback.read_corrections(store.folder)) == 1


def test_a_later_correction_wins_and_the_earlier_label_is_history(store):
    photo = tm.breed_jpeg("golden_retriever")
    sha = hashing.digest(photo)
    store.save(photo, "JPEG", "golden_retriever", "correct", answer("golden_retriever"),
               now=ANSWERED + timedelta(minutes=1))
    record = store.save(photo, "JPEG", "mixed", "wrong", answer("golden_retriever"),
                        now=ANSWERED + timedelta(minutes=5))
    assert visible_copies(store.folder, sha) == [f"mixed/{sha}.jpg"]
    assert (store.folder / "mixed" / f"{sha}.jpg").read_bytes() == photo
    assert record["label"] == "mixed" and record["verdict"] == "wrong"
    assert [(h["label"], h["verdict"], h["corrected_at"]) for h in record["history"]] == [
        ("golden_retriever", "correct", "2025-03-01T12:01:00+00:00")]

    frame = feedback.read_corrections(store.folder)
    assert list(frame.columns[:9]) == feedback.CORRECTION_COLUMNS
    (row,) = frame.to_dict("records")
    assert (row["image_sha256"], row["label"], row["verdict"], row["answer_breed"],
            row["earlier_judgements"]) == (sha, "mixed", "wrong", "golden_retriever", 1)
    assert row["corrected_at"] == pd.Timestamp("2025-03-01T12:05:00", tz="UTC")
    assert str(frame["answered_at"].dt.tz) == "UTC"


def test_each_format_keeps_its_bytes_and_gets_its_extension(store):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGBA", (9, 7), (10, 20, 30, 128)).save(buf, format="PNG")
    record = store.save(buf.getvalue(), "PNG", "not_a_dog", "wrong", answer())
    assert record["file"].startswith("not_a_dog/") and record["file"].endswith(".png")
    assert (store.folder / record["file"]).read_bytes() == buf.getvalue()
    with pytest.raises(ValueError, match="TIFF"):
        store.save(b"II*\x00", "TIFF", "papillon", "wrong", answer("Chihuahua"))


def test_no_corrections_yet_is_an_empty_frame_with_the_contract_columns(tmp_path):
    frame = feedback.read_corrections(tmp_path / "never-served")
    assert frame.empty and list(frame.columns[:9]) == feedback.CORRECTION_COLUMNS
    assert not (tmp_path / "never-served").exists()  # reading creates nothing


# ----- labels: never a path from the client ------------------------------------------------

@pytest.mark.parametrize("verdict, label, judged, expected", [
    ("correct", None, answer("papillon"), "papillon"),
    ("correct", "papillon", answer("papillon"), "papillon"),
    ("wrong", "Chihuahua", answer("papillon"), "Chihuahua"),
    ("wrong", "not_a_dog", answer(None, "unknown"), "not_a_dog"),
    ("wrong", " mixed ", answer("papillon", "unsure"), "mixed"),
])
def test_resolve_label(verdict, label, judged, expected):
    assert feedback.resolve_label(verdict, label, judged, CLASSES) == expected


@pytest.mark.parametrize("verdict, label, judged, message", [
    ("maybe", "papillon", answer(), "verdict must be 'correct' or 'wrong'"),
    ("correct", None, answer(None, "unknown"), "the model named no breed to confirm"),
    ("correct", "Chihuahua", answer("papillon"), "send verdict=wrong to correct it"),
    ("wrong", None, answer(), "verdict=wrong needs the right label"),
    ("wrong", "beagle", answer(), "unknown label 'beagle'"),
    ("wrong", "../../etc", answer(), "unknown label '../../etc'"),
    ("wrong", ".records", answer(), "unknown label '.records'"),
    ("wrong", "papillon", answer("papillon"), "send verdict=correct"),
])
def test_resolve_label_refuses_with_a_message(verdict, label, judged, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        feedback.resolve_label(verdict, label, judged, CLASSES)


@pytest.mark.parametrize("label", ["../escape", ".hidden", "a/b", "", "..", "/abs"])
def test_the_store_itself_refuses_a_label_that_is_not_a_folder_name(store, label):
    with pytest.raises(ValueError, match="cannot name a folder"):
        store.save(b"bytes", "JPEG", label, "wrong", answer())
    assert sorted(p.name for p in store.folder.iterdir()) == [".locks", ".records", ".staging"]


# ----- the folder must be writable at start-up ----------------------------------------------

def test_an_uncreatable_folder_fails_at_open(tmp_path):
    (tmp_path / "data").write_text("a file where the folder should be")
    with pytest.raises(FeedbackError, match=r"feedback folder .*data/feedback cannot be "
                                            r"created .*--no-feedback"):
        FeedbackStore.open(tmp_path / "data" / "feedback")


def test_a_read_only_folder_fails_at_open_and_keeps_what_it_holds():
    from support import users

    with users.shared_tmp() as base:
        folder = base / "feedback"
        photo = tm.breed_jpeg("papillon")
        FeedbackStore.open(folder).save(photo, "JPEG", "papillon", "correct", answer())
        users.make_read_only(folder)
        outcome, message, _ = users.unprivileged(FeedbackStore.open, folder)
        assert outcome == "raised", message
        assert message.startswith(f"FeedbackError: feedback folder {folder} is not writable "
                                  "(Permission denied): choose another folder "
                                  "(--feedback-dir, serve.feedback_dir) or turn feedback off "
                                  "(--no-feedback)")
        assert visible_copies(folder, hashing.digest(photo)) == [
            f"papillon/{hashing.digest(photo)}.jpg"]
        outcome, frame, _ = users.unprivileged(
            lambda: len(feedback.read_corrections(folder)))  # still readable
        assert (outcome, frame) == ("ok", "1")


# ----- concurrency ----------------------------------------------------------------------------

def assert_settled(store: FeedbackStore, photo: bytes, judgements: int) -> dict:
    """One file where the record says, holding the photo; every judgement kept."""
    sha = hashing.digest(photo)
    record = store.read_record(sha)
    assert visible_copies(store.folder, sha) == [record["file"]]
    assert hashing.file_sha256(store.folder / record["file"]) == sha
    assert len(record["history"]) + 1 == judgements
    assert hidden_leftovers(store.folder) == []
    return record


def test_concurrent_corrections_from_threads(store):
    photo = tm.breed_jpeg("papillon", seed=7)
    labels = ["Chihuahua", "golden_retriever", "mixed", "not_a_dog"] * 10

    def judge(label: str) -> str:
        return store.save(photo, "JPEG", label, "wrong", answer())["label"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(judge, labels))
    record = assert_settled(store, photo, len(labels))
    assert sorted([h["label"] for h in record["history"]] + [record["label"]]) == sorted(labels)


WRITER = textwrap.dedent("""\
    import sys, time
    from datetime import UTC, datetime
    from pathlib import Path
    from dogbreeds.data.feedback import Answer, FeedbackStore

    folder, photo_file, start_file, count = sys.argv[1:5]
    labels = sys.argv[5:]
    photo = Path(photo_file).read_bytes()
    store = FeedbackStore(folder)
    answer = Answer("models:/dogbreeds@champion", "1", "ok", "papillon", 0.6, None,
                    datetime.now(UTC))
    while not Path(start_file).exists():
        time.sleep(0.001)
    for i in range(int(count)):
        store.save(photo, "JPEG", labels[i % len(labels)], "wrong", answer)
        print("saved", i, flush=True)
""")


def writer(store: FeedbackStore, photo_file: Path, start: Path, count: int, *labels: str):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(store.folder), str(photo_file),
                             str(start), str(count), *labels], env=venv_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_correcting_the_same_photo_end_with_one_file_and_one_record(store,
                                                                                   tmp_path):
    photo = tm.breed_jpeg("Chihuahua", seed=11, size=256)
    photo_file = tmp_path / "photo.jpg"
    photo_file.write_bytes(photo)
    start = tmp_path / "go"
    procs = [writer(store, photo_file, start, 25, "golden_retriever", "mixed"),
             writer(store, photo_file, start, 25, "not_a_dog", "Chihuahua")]
    time.sleep(3)  # both imported and waiting
    start.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.count("saved") == 25
    record = assert_settled(store, photo, 50)
    labels = [h["label"] for h in record["history"]] + [record["label"]]
    assert {label: labels.count(label) for label in set(labels)} == {
        "golden_retriever": 13, "mixed": 12, "not_a_dog": 13, "Chihuahua": 12}


# ----- crashes -------------------------------------------------------------------------------

KILLED_WRITER = textwrap.dedent("""\
    import sys
    from datetime import UTC, datetime
    from pathlib import Path
    from dogbreeds.data.feedback import Answer, FeedbackStore

    folder, photo_file, first = sys.argv[1:4]
    base = Path(photo_file).read_bytes()
    store = FeedbackStore(folder)
    answer = Answer("models:/dogbreeds@champion", "1", "ok", "papillon", 0.6, None,
                    datetime.now(UTC))
    for i in range(int(first), int(first) + 1000):
        photo = base + i.to_bytes(4, "big")  # a new photo: its bytes are written ...
        store.save(photo, "JPEG", "papillon", "correct", answer)
        store.save(photo, "JPEG", "mixed", "wrong", answer)  # ... then it moves folder
        print("saved", i, flush=True)
""")


def assert_no_half_files(folder: Path) -> None:
    """Every photo a source reader would see is whole (its bytes hash to its name)."""
    for label in folder.iterdir():
        if label.is_dir() and not label.name.startswith("."):
            for photo in label.iterdir():
                assert photo.name.startswith(hashing.file_sha256(photo)), f"half {photo}"


def kill_moments(extra: int = 13):
    """Seven fixed moments after the first save, then (when a loaded machine let too few of
    them land mid-save) up to ``extra`` more, spread over one save's duration."""
    yield from (0.0, 0.03, 0.1, 0.17, 0.25, 0.4, 0.6)
    yield from (0.011 * (1 + 7 * i % 23) for i in range(extra))


def test_a_writer_killed_mid_write_leaves_no_half_file_and_a_readable_store(store, tmp_path):
    """SIGKILL a process saving new 6 MB photos (each written, then moved to another label)
    at several moments: a label folder never holds a partial file or two copies of a photo,
    every record parses, and opening the store (as the server does at start-up) settles each
    photo where its record says."""
    base = tmp_path / "base.jpg"
    base.write_bytes(os.urandom(6 * 1024 * 1024))
    kills = interrupted = runs = 0
    for run, delay in enumerate(kill_moments()):
        if run >= 7 and interrupted >= 2:
            break
        runs += 1
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(store.folder),
                                 str(base), str(run * 1000)], env=venv_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # one photo done: the writer is mid-loop from now on
        assert first.startswith("saved"), proc.stderr.read()
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
        kills += proc.returncode == -signal.SIGKILL
        assert_no_half_files(store.folder)  # before any repair
        records = feedback.read_records(store.folder)  # every record parses
        for record in records:
            assert len(visible_copies(store.folder, record["image_sha256"])) <= 1
        settled = feedback.reconcile(store.folder)  # what the server's start-up does
        interrupted += settled["moved"] + settled["removed"] > 0
        for record in feedback.read_records(store.folder):
            assert visible_copies(store.folder, record["image_sha256"]) == [record["file"]]
        assert hidden_leftovers(store.folder) == []
        assert_no_half_files(store.folder)
    assert kills == runs
    assert interrupted >= 2  # kills did land mid-save (a temp file, staged bytes, a move)
    frame = feedback.read_corrections(store.folder)
    assert len(frame) >= 7 and set(frame["label"]) <= {"papillon", "mixed"}
    shown = sorted(p.name for d in ("papillon", "mixed") for p in (store.folder / d).iterdir())
    assert shown == sorted(Path(f).name for f in frame["file"])  # no photo without a record


def test_reconcile_finishes_a_committed_move_and_drops_an_uncommitted_one(store):
    """The two crash windows, made by hand: a record written but the photo not moved yet
    (committed: the move is finished), and staged bytes with no record (never acknowledged:
    removed), plus a temp file a killed writer left."""
    photo = tm.breed_jpeg("papillon", seed=3)
    sha = hashing.digest(photo)
    store.save(photo, "JPEG", "papillon", "correct", answer())
    record = store.read_record(sha)
    record.update(label="mixed", file=f"mixed/{sha}.jpg")  # commit of a relabel, then crash
    feedback.atomic_write(store.record_path(sha), json.dumps(record).encode())
    (store.staging / f".{sha}.jpg.0123.tmp").write_bytes(photo[:10])
    orphan = tm.breed_jpeg("Chihuahua", seed=4)
    orphan_sha = hashing.digest(orphan)
    (store.staging / f"{orphan_sha}.jpg").write_bytes(orphan)  # staged, record never written

    assert feedback.reconcile(store.folder) == {"moved": 1, "removed": 2}
    assert visible_copies(store.folder, sha) == [f"mixed/{sha}.jpg"]
    assert visible_copies(store.folder, orphan_sha) == []
    assert hidden_leftovers(store.folder) == []
    assert feedback.reconcile(store.folder) == {"moved": 0, "removed": 0}


def test_a_record_edited_by_hand_is_refused_and_no_path_from_it_is_followed(store, tmp_path):
    photo = tm.breed_jpeg("papillon", seed=5)
    sha = hashing.digest(photo)
    store.save(photo, "JPEG", "papillon", "correct", answer())
    outside = tmp_path / "outside"
    outside.mkdir()
    record = store.read_record(sha)
    record["file"] = f"../../outside/{sha}.jpg"
    store.record_path(sha).write_text(json.dumps(record))
    with pytest.raises(FeedbackError, match=r"damaged feedback record .* is not <label>/"):
        feedback.read_corrections(store.folder)
    assert feedback.reconcile(store.folder) == {"moved": 0, "removed": 0}  # logged, left
    assert list(outside.iterdir()) == []
    assert visible_copies(store.folder, sha) == [f"papillon/{sha}.jpg"]
    with pytest.raises(FeedbackError, match="damaged feedback record"):
        store.save(photo, "JPEG", "mixed", "wrong", answer())
    store.record_path(sha).write_text("{not json")
    with pytest.raises(FeedbackError, match="damaged feedback record"):
        store.read_record(sha)
