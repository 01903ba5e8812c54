"""The ``dogbreeds`` command: operate the pipeline's models without knowing MLflow.

Heavy modules (TensorFlow, MLflow) are imported inside each command so that ``--help`` and
``profile`` answer instantly.

The commands run in the project folder: the model they use by default is
``models:/<registry.model_name>@champion``, the name read from ``./params.yaml``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PARAMS_FILE = Path("params.yaml")
CHAMPION = "champion"
# Outside a project folder there is no params.yaml to read (the installed command pointed at a
# shared tracking server with MLFLOW_TRACKING_URI, or a folder holding only mlflow.db), and the
# commands still need a model name: the one the project's params.yaml ships with.
FALLBACK_MODEL_NAME = "dogbreeds"
FALLBACK_SERVE = {"max_batch_size": 32, "max_wait_ms": 5,  # params.yaml's `serve`, likewise
                  "feedback_dir": "data/sources/feedback",
                  "prediction_log": "logs/predictions.sqlite", "log_retention_days": 90}
FALLBACK_MONITOR = {  # params.yaml's `monitor`, likewise
    "since": "7d", "min_predictions": 30, "low_confidence": 0.5, "confidence_bins": 10,
    "alpha": 0.01, "thresholds": {"confidence_psi": 0.25, "low_confidence_rise": 0.10,
                                  "unknown_rise": 0.10, "class_mix_js": 0.20},
    "output": "reports/monitor"}
FALLBACK_EXPERIMENT = "dogbreeds"  # params.yaml's `base.experiment`, likewise


def registry_model_name(params_file: Path = PARAMS_FILE) -> str:
    """``registry.model_name`` from ``params_file`` (FALLBACK_MODEL_NAME when it is absent).

    Raises:
        SettingsError: params.yaml exists but its ``registry`` section is wrong.
    """
    if not params_file.is_file():
        return FALLBACK_MODEL_NAME
    from dogbreeds.tracking.registry import RegistrySettings

    return RegistrySettings.from_params(project_params(params_file)).model_name


def default_model_uri(params_file: Path = PARAMS_FILE) -> str:
    """The champion of the project's registered model: ``models:/<model_name>@champion``."""
    return f"models:/{registry_model_name(params_file)}@{CHAMPION}"


def _cmd_profile(args: argparse.Namespace) -> int:
    from dogbreeds.profiles import apply_profile

    profile = None if args.name == "none" else Path(args.profiles_dir) / f"{args.name}.yaml"
    apply_profile(Path(args.params), profile, args.set or [])
    overrides = f" and {len(args.set)} override(s)" if args.set else ""
    print(f"{args.params}: applied profile {args.name!r}{overrides}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from dogbreeds.serving.predict import run_predict

    return run_predict(paths=args.paths, model_uri=args.model or default_model_uri(),
                       top_k=args.top_k, as_json=args.json, csv_path=args.csv,
                       runtime=args.runtime)


def _with_flags(settings, args: argparse.Namespace):
    """``settings`` with the fields a ``serve`` flag of the same name set."""
    import dataclasses

    flags = {field.name: getattr(args, field.name) for field in dataclasses.fields(settings)
             if getattr(args, field.name, None) is not None}
    return dataclasses.replace(settings, **flags)


def serve_batching(args: argparse.Namespace, params_file: Path = PARAMS_FILE):
    """``serve`` from ``params_file`` (FALLBACK_SERVE outside a project), flags overriding."""
    from dogbreeds.serving.batching import BatchSettings

    return _with_flags(BatchSettings.from_params(project_params(params_file)), args).checked()


def serve_records(args: argparse.Namespace, params_file: Path = PARAMS_FILE):
    """Where ``serve`` keeps its log and feedback: ``serve`` in ``params_file``, flags
    overriding (FALLBACK_SERVE outside a project)."""
    from dogbreeds.serving.records import RecordSettings

    return _with_flags(RecordSettings.from_params(project_params(params_file)), args).checked()


def project_params(params_file: Path = PARAMS_FILE) -> dict:
    """``params_file`` as a dict, or the fallbacks above outside a project."""
    import yaml

    if params_file.is_file():
        return yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    return {"serve": FALLBACK_SERVE, "monitor": FALLBACK_MONITOR,
            "base": {"experiment": FALLBACK_EXPERIMENT}}


def _cmd_monitor(args: argparse.Namespace) -> int:
    from dogbreeds.monitoring.monitor import MonitorSettings, run_monitor
    from dogbreeds.settings import value

    # Its output is read by cron and CI: no progress bar for the one small baseline download.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    params = project_params()
    settings = MonitorSettings.from_params(params)
    return run_monitor(
        model_uri=args.model or default_model_uri(),
        log_path=Path(args.log) if args.log else value(params, "serve.prediction_log", Path),
        feedback_dir=(Path(args.feedback) if args.feedback
                      else value(params, "serve.feedback_dir", Path)),
        since=args.since or settings.since, settings=settings,
        output=Path(args.output) if args.output else settings.output, root=Path.cwd(),
        experiment=value(params, "base.experiment", str))


def _cmd_serve(args: argparse.Namespace) -> int:
    from dogbreeds.serving.web import serve

    serve(model_uri=args.model or default_model_uri(), host=args.host, port=args.port,
          batching=serve_batching(args), runtime=args.runtime, records=serve_records(args),
          with_feedback=not args.no_feedback)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from dogbreeds.serving.predict import ModelLoadError, open_store
    from dogbreeds.serving.runtimes import export_registered

    model_uri = args.model or default_model_uri()
    try:
        open_store(model_uri)
        uri = export_registered(model_uri)
    except (ModelLoadError, ValueError) as exc:
        print(f"dogbreeds export: {exc}", file=sys.stderr)
        return 2
    print(f"dogbreeds export: {model_uri} → LiteRT at {uri}")
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from dogbreeds.tracking.registry_cli import cli_promote

    return cli_promote(name=args.name or registry_model_name(), version=args.version,
                       alias=args.alias)


def _cmd_models(args: argparse.Namespace) -> int:
    from dogbreeds.tracking.registry_cli import cli_models

    return cli_models(name=args.name or registry_model_name())


MODEL_HELP = ("any MLflow model URI (default: models:/<registry.model_name>@champion, the name "
              "read from ./params.yaml)")
NAME_HELP = "registered model name (default: registry.model_name in ./params.yaml)"
RUNTIME_HELP = ("pyfunc: the registered MLflow model (default, the source of truth); litert: "
                "its LiteRT export, faster on CPU (made by `dogbreeds export`)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dogbreeds", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profile", help="merge profiles/NAME.yaml and -S overrides into params.yaml")
    p.add_argument("name", help="profile name (profiles/NAME.yaml), or 'none' for overrides only")
    p.add_argument("-S", "--set", action="append", metavar="KEY=VALUE",
                   help="override one param (YAML value), like `dvc exp run -S`")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--profiles-dir", default="profiles")
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("predict",
                       help="breeds of photos (files or folders), top-k with probabilities")
    p.add_argument("paths", nargs="+", help="photos or folders (walked recursively)")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--csv", metavar="FILE", help="also write one row per photo to FILE")
    p.add_argument("--runtime", choices=("pyfunc", "litert"), default="pyfunc",
                   help=RUNTIME_HELP)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("serve", help="web demo: upload a photo, see the likely breeds")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch-size", type=int, metavar="N",
                   help="photos per model call when requests arrive together "
                        "(default: serve.max_batch_size in ./params.yaml)")
    p.add_argument("--max-wait-ms", type=float, metavar="MS",
                   help="longest a photo waits for others to join its call; a lone request "
                        "never waits (default: serve.max_wait_ms in ./params.yaml)")
    p.add_argument("--runtime", choices=("pyfunc", "litert"), default="pyfunc",
                   help=RUNTIME_HELP)
    p.add_argument("--no-feedback", action="store_true",
                   help="hide the Correct / Wrong buttons and refuse POST /api/feedback")
    p.add_argument("--feedback-dir", type=Path, metavar="DIR",
                   help="where corrected photos are kept, <label>/<sha256>.<ext> "
                        "(default: serve.feedback_dir in ./params.yaml)")
    p.add_argument("--prediction-log", type=Path, metavar="FILE",
                   help="SQLite file every answer is logged to "
                        "(default: serve.prediction_log in ./params.yaml)")
    p.add_argument("--log-retention-days", type=int, metavar="DAYS",
                   help="delete logged answers older than this "
                        "(default: serve.log_retention_days in ./params.yaml)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("export", help="export a registered version to LiteRT, stored with it "
                                      "(for --runtime litert)")
    p.add_argument("--model", help="a registered version: models:/<name>@<alias> or "
                                   "models:/<name>/<version> (default: the champion)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("monitor", help="recent predictions and corrections vs the champion's "
                                       "test answers: exit 3 on drift")
    p.add_argument("--since", metavar="WHEN",
                   help="window: a duration back from now (30m, 12h, 7d, 2w) or an ISO "
                        "date/time (default: monitor.since in ./params.yaml)")
    p.add_argument("--log", metavar="PATH",
                   help="prediction log (default: serve.prediction_log in ./params.yaml)")
    p.add_argument("--feedback", metavar="DIR",
                   help="corrections folder (default: serve.feedback_dir in ./params.yaml)")
    p.add_argument("--model", help="the registered version judged, whose baseline and traffic "
                                   "are compared (default: the champion)")
    p.add_argument("--output", metavar="DIR",
                   help="where monitor.json and monitor.png go (default: monitor.output)")
    p.set_defaults(func=_cmd_monitor)

    p = sub.add_parser("promote", help="point an alias (champion) at a registered version")
    p.add_argument("version", help="registered model version number")
    p.add_argument("--name", help=NAME_HELP)
    p.add_argument("--alias", default=CHAMPION)
    p.set_defaults(func=_cmd_promote)

    p = sub.add_parser("models", help="registered versions with their aliases and metrics")
    p.add_argument("--name", help=NAME_HELP)
    p.set_defaults(func=_cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's C++ info/warning lines (oneDNN, CPU flags, a rejected file's decode error)
    # mean nothing to the people using these commands; errors are still printed.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    from dogbreeds.settings import SettingsError

    try:
        return args.func(args)
    except SettingsError as exc:  # a wrong params.yaml: say which key, no traceback
        print(f"dogbreeds {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
