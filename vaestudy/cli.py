"""`vaestudy` command line: train, validate, run, report, ui.

User errors (bad config, missing data, unknown study) print one clear message to stderr and
exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vaestudy.errors import UserError


def _cmd_train(args: argparse.Namespace) -> int:
    from vaestudy.config import load_run_config
    from vaestudy.progress import print_metrics, train_with_progress

    cfg = load_run_config(args.config, args.set)
    result = train_with_progress(cfg)
    print_metrics("test", result.test)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaestudy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one config (or a study's template) without Ray")
    train.add_argument("config", help="YAML config or study file")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key")
    train.set_defaults(func=_cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
