"""Stage download: `python -m pipeline.download` against a real local HTTP server."""

from __future__ import annotations

import json

import pytest

from dogbreeds.profiles import apply_profile
from support.project import make_project, run_stage, stage_runs
from support.servers import DirectoryServer

ARCHIVES = ["images.tar", "annotation.tar", "lists.tar"]


@pytest.mark.slow
def test_stage_end_to_end(fake_archives, tmp_path):
    project = make_project(tmp_path / "proj")
    checksums = fake_archives.checksums()
    with DirectoryServer(fake_archives.archives) as server:
        apply_profile(project / "params.yaml", None, [
            f"download.base_url={server.url}",
            "download.mirrors=[]",
            f"download.checksums={json.dumps({**checksums, 'lists.tar': '0' * 64})}",
        ])
        failed = run_stage(project, "download")
        assert failed.returncode != 0
        assert "ChecksumError" in failed.stderr and checksums["lists.tar"] in failed.stderr

        apply_profile(project / "params.yaml", None,
                      [f"download.checksums={json.dumps(checksums)}"])
        done = run_stage(project, "download")
        assert done.returncode == 0, done.stderr

    raw = project / "data" / "raw"
    assert len(list((raw / "Images").rglob("*.jpg"))) == fake_archives.n_images
    assert len(list((raw / "Annotation").rglob("*"))) > fake_archives.n_images
    assert (raw / "lists" / "train_list.mat").is_file()
    report = json.loads((raw / "download_report.json").read_text())
    assert report["found"] == ARCHIVES and "stats" not in report
    assert (project / "data" / "downloads" / "images.tar").is_file()  # the cache survives

    runs = stage_runs(project, "download")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 1 and [r.info.status for r in runs].count("FAILED") == 1
    run_ = finished[0]
    assert run_.data.tags["download.missing"] == "none"
    assert run_.data.tags["download.url.images.tar"] == server.url + "images.tar"
    assert run_.data.params["download.base_url"] == server.url
    assert run_.data.metrics["bytes.images.tar"] == (
        fake_archives.archives / "images.tar").stat().st_size
