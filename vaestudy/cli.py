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

    if args.members:
        from vaestudy.progress import print_members
        from vaestudy.vectorized import VectorTrainer, member_configs

        cfgs, varied = member_configs(args.config, args.set, args.members)
        print_members(varied, VectorTrainer(cfgs).fit())
        return 0
    cfg = load_run_config(args.config, args.set)
    result = train_with_progress(cfg)
    print_metrics("test", result.test)
    if result.saturated:
        stopped = f"; stopped at step {result.steps}" if result.stopped_saturated else ""
        print(
            f"saturated: {', '.join(result.saturated)} (λ at multiplier.max over the last 20% "
            f"of training: target unreachable at this budget{stopped})"
        )
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from vaestudy.study.spec import load_study

    study = load_study(args.study, args.set)
    spec = study.spec
    packs = f" in packs of {spec.pack}" if spec.pack > 1 else ""
    yardstick = ", ".join(rule.label for rule in spec.constraints) or "none"
    print(
        f"{args.study}: study {spec.name!r} is valid: {spec.num_trials} trials{packs}, "
        f"{len(study.distributions)} searched keys ({', '.join(study.distributions)}), "
        f"metric {spec.metric} ({spec.mode}), sampler {spec.sampler.kind}; yardstick "
        f"{yardstick}; the search sees {spec.search_constraints} constraints"
    )
    if study.variants:
        print(f"objective variants: {'; '.join(study.variants)}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from vaestudy.report import answer
    from vaestudy.study.runner import run_study
    from vaestudy.study.spec import load_study

    overrides = list(args.set or [])
    if args.trials is not None:
        overrides.append(f"study.num_trials={args.trials}")
    study = load_study(args.study, overrides)
    outcome = run_study(
        study,
        tracking_uri=args.tracking_uri,
        address=args.address,
        resume=args.resume,
        storage_path=args.storage_path,
    )
    state = "interrupted" if outcome.interrupted else "done"
    if outcome.report is not None:
        report = outcome.report
        print(
            f"\n{report.rules_text()}\n\n{report.summary.to_markdown(index=False, floatfmt='.4g')}"
        )
        print(f"\n{answer(report)}\n")
    print(
        f"study {study.name!r} {state}: {outcome.finished} trials finished, {outcome.failed} "
        f"failed; MLflow parent run {outcome.parent_run_id} (experiment {study.name!r}); "
        f"tables and figures: vaestudy report {study.name}"
    )
    if outcome.interrupted:
        print(f"continue it with: vaestudy run {args.study} --resume", file=sys.stderr)
        return 1
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    from vaestudy.report import attach, build_report, write_report
    from vaestudy.tracking import tracking_session

    name = args.study
    if name.endswith((".yaml", ".yml")):
        from vaestudy.study.spec import load_study

        name = load_study(name).name
    with tracking_session(args.tracking_uri) as uri:
        client = MlflowClient(uri)
        report = build_report(client, name, args.run)
        out = Path(args.out or Path("reports") / name)
        files = write_report(client, report, out)
        attach(client, report, files)
    if args.format == "markdown":
        print(report.markdown())
    elif args.format == "csv":
        print(report.trials.to_csv(index=False))
    else:
        print((out / "report.html").read_text())
    print(
        f"report written to {out}/ and attached to MLflow run {report.parent_run_id}",
        file=sys.stderr,
    )
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    from vaestudy.tracking import default_store, store_uri

    backend = store_uri(args.tracking_uri)
    if backend.startswith(("http://", "https://")):
        print(f"open {backend} in a browser: that server is the UI")
        return 0
    artifacts = (default_store() / "artifacts").resolve()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    print(f"MLflow UI on http://{args.host}:{args.port} (store {backend}); Ctrl-C stops it")
    return subprocess.call(cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaestudy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one config (or a study's template) without Ray")
    train.add_argument("config", help="YAML config or study file")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key")
    train.add_argument(
        "--members",
        action="append",
        metavar="KEY=[V1,V2,...]",
        help="train one member per value as one vectorised computation (keys: train.seed, "
        "objective.multiplier.init and the objective's targets/weights, e.g. objective.kappa)",
    )
    train.set_defaults(func=_cmd_train)

    validate = sub.add_parser("validate", help="check a study file without running it")
    validate.add_argument("study")
    validate.add_argument("--set", action="append", metavar="KEY=VALUE")
    validate.set_defaults(func=_cmd_validate)

    run = sub.add_parser("run", help="run a study: Ray Tune trials, Optuna search, MLflow runs")
    run.add_argument("study", help="study YAML file")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key")
    run.add_argument("--trials", type=int, help="number of trials (study.num_trials)")
    run.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or local)")
    run.add_argument(
        "--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or ./mlflow)"
    )
    run.add_argument("--storage-path", help="Ray Tune results/checkpoints (default ./ray_results)")
    run.add_argument("--resume", action="store_true", help="continue the study's last run")
    run.set_defaults(func=_cmd_run)

    report = sub.add_parser(
        "report", help="tables and figures: which objectives satisfy constraints"
    )
    report.add_argument("study", help="study name or its YAML file")
    report.add_argument("--tracking-uri")
    report.add_argument("--run", metavar="RUN_ID", help="the study's parent run (default: newest)")
    report.add_argument("--format", choices=["markdown", "csv", "html"], default="markdown")
    report.add_argument("--out", help="output folder (default reports/STUDY)")
    report.set_defaults(func=_cmd_report)

    ui = sub.add_parser("ui", help="open the MLflow UI on the study store")
    ui.add_argument("--tracking-uri")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=_cmd_ui)
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
