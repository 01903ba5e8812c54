"""The ``dogbreeds`` command: operate the pipeline's models without knowing MLflow.

Heavy modules (TensorFlow, MLflow) are imported inside each command so that ``--help`` and
``profile`` answer instantly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_MODEL_URI = "models:/dogbreeds@champion"


def _cmd_profile(args: argparse.Namespace) -> int:
    from dogbreeds.profiles import apply_profile

    profile = None if args.name == "none" else Path(args.profiles_dir) / f"{args.name}.yaml"
    apply_profile(Path(args.params), profile, args.set or [])
    print(f"{args.params}: applied profile {args.name!r}" + (f" and {len(args.set)} override(s)" if args.set else ""))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from dogbreeds.serving.predict import run_predict

    return run_predict(paths=args.paths, model_uri=args.model, top_k=args.top_k,
                       as_json=args.json, csv_path=args.csv)


def _cmd_serve(args: argparse.Namespace) -> int:
    from dogbreeds.serving.web import serve

    serve(model_uri=args.model, host=args.host, port=args.port)
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from dogbreeds.tracking.registry_cli import cli_promote

    return cli_promote(name=args.name, version=args.version, alias=args.alias)


def _cmd_models(args: argparse.Namespace) -> int:
    from dogbreeds.tracking.registry_cli import cli_models

    return cli_models(name=args.name)


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

    p = sub.add_parser("predict", help="breeds of photos (files or folders), top-k with probabilities")
    p.add_argument("paths", nargs="+", help="photos or folders (walked recursively)")
    p.add_argument("--model", default=DEFAULT_MODEL_URI, help="any MLflow model URI")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--csv", metavar="FILE", help="also write one row per photo to FILE")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("serve", help="web demo: upload a photo, see the likely breeds")
    p.add_argument("--model", default=DEFAULT_MODEL_URI, help="any MLflow model URI")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("promote", help="point an alias (champion) at a registered version")
    p.add_argument("version", help="registered model version number")
    p.add_argument("--name", default="dogbreeds", help="registered model name")
    p.add_argument("--alias", default="champion")
    p.set_defaults(func=_cmd_promote)

    p = sub.add_parser("models", help="registered versions with their aliases and metrics")
    p.add_argument("--name", default="dogbreeds", help="registered model name")
    p.set_defaults(func=_cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's C++ info/warning lines (oneDNN, CPU flags, a rejected file's decode error)
    # mean nothing to the people using these commands; errors are still printed.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
