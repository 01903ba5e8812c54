"""dogbreeds.data.sources: the data.sources entries, their folders and their label checks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dogbreeds.data import sources
from dogbreeds.data.sources import LocalSource, UnknownLabelError
from dogbreeds.settings import SettingsError
from support.project import repo_params

TRAINED = ["Chihuahua", "papillon", "golden_retriever"]


def params_with(*entries: dict) -> dict:
    params = repo_params()
    params["data"]["sources"] = list(entries)
    return params


def entry(name: str = "shelter", path: str = "data/sources/shelter", **extra) -> dict:
    return {"name": name, "path": path, "test_only": False, "new_classes": [], **extra}


def test_shipped_params_have_the_feedback_source():
    (feedback,) = sources.local_sources(repo_params())
    assert feedback == LocalSource("feedback", Path("data/sources/feedback"), False,
                                   ("mixed", "not_a_dog"))


def test_entries_are_read_and_paths_normalised():
    found = sources.local_sources(params_with(
        entry(), entry("intake-2024", "data/sources/./intake/../intake", test_only=True,
                       new_classes=["mixed"])))
    assert [s.name for s in found] == ["shelter", "intake-2024"]
    assert found[1] == LocalSource("intake-2024", Path("data/sources/intake"), True, ("mixed",))
    assert sources.local_sources(params_with()) == ()


@pytest.mark.parametrize("entries, message", [
    ([entry("stanford", "data/sources/x")], r"sources\[0\]\.name: 'stanford' is the Stanford"),
    ([entry(), entry(path="data/sources/other")], r"sources\[1\]\.name: 'shelter' is used twice"),
    ([entry("Shelter Photos")], r"sources\[0\]\.name: 'Shelter Photos' must be lower-case"),
    ([entry(path="photos/shelter")], r"sources\[0\]\.path: photos/shelter must be a folder "
                                     r"inside data\.sources_dir \(data/sources\)"),
    ([entry(path="/srv/photos")], r"sources\[0\]\.path: /srv/photos must be a folder inside"),
    ([entry(path="data/sources")], r"must be a folder inside data\.sources_dir"),
    ([entry(path="data/sources/../raw")], r"data/raw must be a folder inside"),
    ([entry(), entry("b", "data/sources/shelter/b")], r"sources\[1\]\.path: .* overlaps source "
                                                      r"'shelter'"),
    ([entry(new_classes=["a/b"])], r"new_classes: 'a/b' is not a folder name"),
    ([{"name": "x", "path": "data/sources/x"}], r"missing data\.sources\[0\]\.test_only"),
    ([entry(test_only="yes")], r"data\.sources\[0\]\.test_only: expected true or false"),
    (["data/sources/x"], r"data\.sources\[0\]: expected a mapping"),
])
def test_a_bad_entry_names_its_key(entries, message):
    with pytest.raises(SettingsError, match=message):
        sources.local_sources(params_with(*entries))


def test_labelled_files_skip_hidden_and_unlabelled_files(tmp_path, caplog):
    folder = tmp_path / "feedback"
    for rel in ("beagle/a.jpg", "beagle/2024/b.jpg", "beagle/.c.jpg", "mixed/d.png",
                ".records/e.json", ".gitkeep", "beagle/.cache/f.jpg", "stray.jpg"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"x")
    (folder / "empty").mkdir()
    with caplog.at_level(logging.WARNING, logger="dogbreeds.data.sources"):
        found = sources.labelled_files(folder)
    assert {label: [p.relative_to(folder).as_posix() for p in files]
            for label, files in found.items()} == {
        "beagle": ["beagle/2024/b.jpg", "beagle/a.jpg"], "empty": [], "mixed": ["mixed/d.png"]}
    assert "stray.jpg is not in a <label>/ folder" in caplog.text


def test_a_missing_folder_is_an_empty_source(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="dogbreeds.data.sources"):
        assert sources.labelled_files(tmp_path / "not-yet") == {}
    assert "does not exist" in caplog.text


def test_close_match_ignores_case_and_gives_up_when_nothing_is_close():
    assert sources.close_match("golden_retreiver", TRAINED) == "golden_retriever"
    assert sources.close_match("chihuahua", TRAINED) == "Chihuahua"
    assert sources.close_match("Papilon", TRAINED) == "papillon"
    assert sources.close_match("husky", TRAINED) is None


def test_check_labels_names_every_bad_folder_with_a_suggestion():
    shelter = LocalSource("shelter", Path("data/sources/shelter"), False, ("mixed",))
    sources.check_labels(shelter, ["Chihuahua", "mixed"], TRAINED)  # all fine
    with pytest.raises(UnknownLabelError) as caught:
        sources.check_labels(shelter, ["golden_retreiver", "mixd", "husky", "beagle", "papillon"],
                             TRAINED, stanford_breeds=[*TRAINED, "beagle"])
    message = str(caught.value)
    assert message.startswith("source 'shelter': 4 folder(s) are not a trained breed")
    assert "data/sources/shelter/golden_retreiver: did you mean 'golden_retriever'?" in message
    assert "data/sources/shelter/mixd: did you mean 'mixed'?" in message
    assert "data/sources/shelter/husky: no trained breed is close" in message
    assert "data/sources/shelter/beagle: a Stanford Dogs breed that data.breeds leaves out" \
        in message
    assert "shelter/papillon" not in message                   # a trained breed is fine
    assert "new_classes (mixed)" in message
    # A new class another source may bring is not this one's to bring.
    strict = LocalSource("strict", Path("data/sources/strict"), False, ())
    with pytest.raises(UnknownLabelError, match=r"strict/mixed: no trained breed is close"):
        sources.check_labels(strict, ["mixed"], TRAINED)


def test_the_web_demo_keeps_its_corrections_in_a_data_source():
    """serve.feedback_dir must be one of data.sources, or corrections never reach training."""
    from support.project import repo_params

    params = repo_params()
    sources = {entry["path"]: entry["name"] for entry in params["data"]["sources"]}
    assert sources.get(params["serve"]["feedback_dir"]) == "feedback"
