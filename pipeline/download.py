"""Stage `download`: fetch and verify the Stanford Dogs archives, extract them into data/raw.

Archives stay in ``download.cache_dir`` (not a DVC output) across runs; ``data/raw`` (the
DVC output) gets Images/, Annotation/, lists/ and ``download_report.json``.
"""

from __future__ import annotations

import logging

import mlflow

from dogbreeds.data import download
from dogbreeds.jsonfile import write_json
from dogbreeds.tracking import store
from pipeline.common import load_params, project_root

REPORT_FILE = "download_report.json"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    settings = download.DownloadSettings.from_params(params)
    root = project_root()
    raw_dir = root / settings.raw_dir
    with store.stage_run("download", root,
                            params={"download": params["download"],
                                    "data.raw_dir": params["data"]["raw_dir"]},
                            experiment=params["base"]["experiment"]):
        report = download.download_dataset(
            settings.base_urls, settings.archives, root / settings.cache_dir, raw_dir,
            settings.checksums, settings.verify, settings.fetch_options())
        # Timings and cache use stay out of the DVC output: a re-run that fetched the same
        # bytes must give the same data/raw hash (downstream stages then do not re-run).
        stable = {key: value for key, value in report.items() if key != "stats"}
        write_json(raw_dir / REPORT_FILE, stable)
        mlflow.set_tags(download.report_tags(report))
        mlflow.log_metrics(download.report_metrics(report))
        mlflow.log_dict(report, REPORT_FILE)
    if report["missing"]:
        logging.getLogger(__name__).warning("missing optional archives: %s",
                                            ", ".join(report["missing"]))


if __name__ == "__main__":
    main()
