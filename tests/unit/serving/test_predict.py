"""``dogbreeds predict`` on a tiny registered classifier (see tiny_registry.py): files, folders,
output formats, bad files and exit statuses."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dogbreeds.serving.answers import csv_header, display_name, format_table, write_csv
from dogbreeds.serving.predict import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    PhotoResult,
    collect_photos,
    run_predict,
)
from support.project import venv_env

CHAMPION = "models:/dogbreeds@champion"


@pytest.fixture
def registry(tiny_registry, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_registry.tracking_uri)
    return tiny_registry


@pytest.fixture
def bad_files(tmp_path, tiny_registry) -> dict[str, Path]:
    good = tiny_registry.photos["papillon"][0].read_bytes()
    files = {
        "text": tmp_path / "notes.jpg",
        "empty": tmp_path / "empty.jpg",
        "truncated": tmp_path / "truncated.jpg",
    }
    files["text"].write_text("this is not a photo")
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(good[: len(good) // 3])
    return files


def run(paths, **kwargs) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    kwargs.setdefault("model_uri", CHAMPION)
    kwargs.setdefault("top_k", 3)
    kwargs.setdefault("as_json", False)
    kwargs.setdefault("csv_path", None)
    code = run_predict([str(p) for p in paths], stdout=out, stderr=err, **kwargs)
    return code, out.getvalue(), err.getvalue()


def test_display_name_is_human_readable():
    assert display_name("golden_retriever") == "Golden retriever"
    assert display_name("Great_Dane") == "Great Dane"
    assert display_name("black-and-tan_coonhound") == "Black-and-tan coonhound"


def test_collect_photos_walks_folders_sorted_and_reports_missing(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    for name in ("b/deep/z.JPG", "b/a.png", "b/readme.txt", "c.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "empty_dir").mkdir()
    photos, problems = collect_photos([tmp_path / "b", tmp_path / "c.jpg", tmp_path / "b/a.png",
                                       tmp_path / "missing.jpg", tmp_path / "empty_dir"])
    assert [p.relative_to(tmp_path).as_posix() for p in photos] == ["b/a.png", "b/deep/z.JPG",
                                                                    "c.jpg"]
    assert {(Path(p.path).name, p.error) for p in problems} == {
        ("missing.jpg", "no such file or folder"), ("empty_dir", "no images in this folder")}


def test_good_photos_and_folder_table(registry):
    folder = registry.photos["golden_retriever"][0].parent.parent  # Images/: every breed
    code, out, err = run([registry.photos["Chihuahua"][0], folder])
    assert code == EXIT_OK, err
    lines = out.splitlines()
    assert lines[0].split() == ["photo", "#", "breed", "probability", "answer"]
    # One photo given directly (also found again in the folder: listed once) + 6 in the folder.
    firsts = [line for line in lines[1:] if line.split()[0].endswith(".jpg")]
    assert len(firsts) == 6
    for line in firsts:
        path, rank, breed, prob, said = re.split(r"\s{2,}", line.strip())
        expected = Path(path).parent.name.split("-", 1)[1]
        assert rank == "1" and breed == display_name(expected)
        assert prob.endswith("%") and float(prob[:-1]) > 50
        assert said.startswith(f"Most likely: {display_name(expected)} (")
    assert len(lines) == 1 + 6 * 3  # three ranks per photo


def test_json_output_is_ranked_raw_labels(registry):
    photos = [p for breed in registry.classes for p in registry.photos[breed]]
    code, out, _ = run(photos, as_json=True, top_k=2)
    assert code == EXIT_OK
    results = json.loads(out)
    assert [r["path"] for r in results] == [str(p) for p in photos]
    for result in results:
        assert result["status"] == "ok" and result["error"] is None
        preds = result["predictions"]
        assert len(preds) == 2
        assert preds[0]["breed"] == Path(result["path"]).parent.name.split("-", 1)[1]
        assert preds[0]["probability"] >= preds[1]["probability"]


def test_bad_files_get_their_own_error_and_the_rest_still_run(registry, bad_files, tmp_path):
    good = registry.photos["golden_retriever"]
    paths = [good[0], bad_files["text"], bad_files["empty"], bad_files["truncated"],
             tmp_path / "missing.jpg", good[1]]
    csv_path = tmp_path / "out" / "intake.csv"
    csv_path.parent.mkdir()
    code, out, err = run(paths, as_json=True, csv_path=str(csv_path))
    assert code == EXIT_FAILED
    assert "4 of 6 photo(s) failed" in err
    by_path = {Path(r["path"]).name: r for r in json.loads(out)}
    assert by_path[good[0].name]["predictions"][0]["breed"] == "golden_retriever"
    assert by_path[good[1].name]["predictions"][0]["breed"] == "golden_retriever"
    assert by_path["empty.jpg"]["error"] == "empty file"
    assert by_path["missing.jpg"]["error"] == "no such file or folder"
    assert by_path["notes.jpg"]["error"].startswith("not a readable image")
    assert by_path["truncated.jpg"]["error"].startswith("not a readable image")
    assert all(by_path[n]["status"] == "error" and not by_path[n]["predictions"]
               for n in ("notes.jpg", "empty.jpg", "truncated.jpg", "missing.jpg"))

    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == csv_header(3) == [
        "path", "status", "breed", "probability", "candidates", "novelty",
        "breed_1", "prob_1", "breed_2", "prob_2", "breed_3", "prob_3", "error"]
    rows_by_name = {Path(r["path"]).name: r for r in rows}
    assert len(rows) == 6
    ok = rows_by_name[good[0].name]
    assert ok["status"] == "ok" and ok["breed_1"] == "golden_retriever" and ok["error"] == ""
    assert float(ok["prob_1"]) >= float(ok["prob_2"]) >= float(ok["prob_3"])
    bad = rows_by_name["truncated.jpg"]
    assert bad["status"] == "error" and bad["breed_1"] == "" and "readable" in bad["error"]


def test_table_shows_errors(registry, bad_files):
    code, out, _ = run([registry.photos["papillon"][0], bad_files["empty"]])
    assert code == EXIT_FAILED
    assert "Papillon" in out
    assert any("empty.jpg" in line and "error: empty file" in line for line in out.splitlines())


def test_unknown_model_is_a_usage_error(registry, tmp_path):
    code, out, err = run([registry.photos["papillon"][0]], model_uri="models:/dogbreeds@nobody")
    assert code == EXIT_USAGE and out == ""
    assert "no model at models:/dogbreeds@nobody: run `make repro` first" in err
    code, _, err = run([tmp_path / "missing.jpg"], model_uri=str(tmp_path / "no_model_here"))
    assert code == EXIT_USAGE and f"no model at {tmp_path / 'no_model_here'}" in err


def test_top_k_must_be_positive(registry):
    code, _, err = run([registry.photos["papillon"][0]], top_k=0)
    assert code == EXIT_USAGE and "--top-k" in err


def test_console_script(registry, tmp_path):
    """The installed `dogbreeds` command in a fresh process, in the project's own folder
    (its mlflow.db is found from the working directory, no environment variable)."""
    folder = tmp_path / "photos"
    shutil.copytree(registry.photos["Chihuahua"][0].parent, folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dogbreeds")), "predict", str(folder),
         "--json", "--top-k", "1", "--csv", str(tmp_path / "out.csv")],
        cwd=registry.root, env=venv_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_FAILED, proc.stderr
    results = {Path(r["path"]).name: r for r in json.loads(proc.stdout)}
    assert results["broken.jpg"]["status"] == "error"
    good = [r for name, r in results.items() if name != "broken.jpg"]
    assert len(good) == 2 and all(r["predictions"][0]["breed"] == "Chihuahua" for r in good)
    assert (tmp_path / "out.csv").read_text().count("\n") == 4


def test_outside_a_project_says_so_without_creating_a_store(tmp_path, monkeypatch):
    photo = tmp_path / "dog.jpg"
    photo.write_bytes(b"\xff\xd8\xff")
    monkeypatch.chdir(tmp_path)  # no mlflow.db here and no MLFLOW_TRACKING_URI
    code, _, err = run([photo])
    assert code == EXIT_USAGE
    assert "no model at models:/dogbreeds@champion: run `make repro` first" in err
    assert "no MLflow store mlflow.db" in err
    assert not (tmp_path / "mlflow.db").exists()


def test_csv_into_a_missing_folder_is_a_usage_error(registry, tmp_path):
    code, _, err = run([registry.photos["papillon"][0]], csv_path=str(tmp_path / "no" / "x.csv"))
    assert code == EXIT_USAGE and "its folder does not exist" in err


def answered(path: str, status: str, candidates: list[str], novelty: float | None = 0.4):
    """A PhotoResult as the model answers (no model needed to check the formats)."""
    preds = [{"breed": b, "probability": p} for b, p in
             (("beagle", 0.55), ("basset", 0.35), ("papillon", 0.10))]
    breed = None if status == "unknown" else "beagle"
    return PhotoResult(path, predictions=preds, answer={
        "status": status, "breed": breed, "probability": 0.55, "candidates": candidates,
        "novelty": novelty})


def test_table_json_and_csv_show_status_and_candidates(tmp_path):
    results = [answered("a.jpg", "ok", ["beagle"]),
               answered("b.jpg", "unsure", ["beagle", "basset"]),
               answered("c.jpg", "unknown", [], novelty=3.2),
               PhotoResult("d.jpg", error="not a readable image: empty file")]
    table = format_table(results).splitlines()
    assert table[1].endswith("Most likely: Beagle (55 %)")
    assert table[4].endswith("Not sure — one of: Beagle, Basset (mixed breed?)")
    assert table[7].endswith("This doesn't look like a dog breed this model knows")
    as_json = [r.to_dict() for r in results]
    assert [r["status"] for r in as_json] == ["ok", "unsure", "unknown", "error"]
    assert as_json[1]["candidates"] == ["beagle", "basset"] and as_json[2]["breed"] is None
    out = io.StringIO()
    write_csv(results, out, top_k=2)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["status"], r["breed"], r["candidates"]) for r in rows] == [
        ("ok", "beagle", "beagle"), ("unsure", "beagle", "beagle;basset"),
        ("unknown", "", ""), ("error", "", "")]
    assert rows[2]["novelty"] == "3.2000" and rows[2]["breed_1"] == "beagle"
