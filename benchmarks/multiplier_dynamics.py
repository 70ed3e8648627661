"""How the Lagrange multiplier update rules settle: gradient ascent, GECO's rule, νPI and the
augmented Lagrangian, on GECO (recon <= κ = 100 nats) and a Lagrangian VAE target, trained on
the bundled MNIST subset with `Trainer` (Bernoulli pixels, MLP, z = 16).

    python -m benchmarks.multiplier_dynamics --data ../shared/data [--epochs 20] \
        [--out benchmarks/multiplier_dynamics.png]

Per case and rule: steps to first feasibility (the first logged interval whose mean constraint
value is under its target), the final distance to the target on held-out data (test value −
target, nats: negative = under), the oscillation (sign changes of value − target over the ~100
logged intervals), the final λ and the final test KL (nats). The figure shows each run's λ and
constraint paths. Every rule sees the same data order and initialisation (`train.seed`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import base_parser, device_name  # noqa: E402
from vaestudy.config.run import RunConfig  # noqa: E402
from vaestudy.training.trainer import Diverged, Trainer, TrainResult  # noqa: E402

CASES = {  # name: (objective, its constraint names)
    "geco κ=100": ({"name": "geco", "kappa": 100.0}, ["recon"]),
    "lagvae ε=(140, 20)": (
        {"name": "lagvae", "mi": 1.0, "epsilon": [140.0, 20.0]},
        ["neg_elbo", "mmd"],
    ),
}
RULES = {  # label: multiplier settings (min/max as shipped for GECO)
    "gradient (sgd, lr 1e-3)": {"update": "gradient", "optimizer": "sgd", "lr": 1e-3},
    "geco (lr 1e-4, ema 0.99: shipped before)": {"update": "geco", "lr": 1e-4, "ema": 0.99},
    "geco (lr 1e-3, ema 0.9)": {"update": "geco", "lr": 1e-3, "ema": 0.9},
    "νPI (κi 1e-3, κp 0.05, ν 0.9)": {"update": "nupi", "lr": 1e-3, "kp": 0.05, "nu": 0.9},
    "νPI (κi 1e-3, κp 0.2, ν 0.5)": {"update": "nupi", "lr": 1e-3, "kp": 0.2, "nu": 0.5},
    "νPI (κi 3e-3, κp 0.5, ν 0.5)": {"update": "nupi", "lr": 3e-3, "kp": 0.5, "nu": 0.5},
    "νPI (κi 1e-2, κp 1, ν 0.5)": {"update": "nupi", "lr": 1e-2, "kp": 1.0, "nu": 0.5},
    "geco (lr 1e-3, ema 0.9, warm-up 150)": {
        "update": "geco",
        "lr": 1e-3,
        "ema": 0.9,
        "warmup_steps": 150,
    },
    "νPI (κi 1e-3, κp 0.2, ν 0.5, warm-up 150)": {
        "update": "nupi",
        "lr": 1e-3,
        "kp": 0.2,
        "nu": 0.5,
        "warmup_steps": 150,
    },
    "νPI (κi 1e-3, κp 0.5, ν 0.5, warm-up 150)": {
        "update": "nupi",
        "lr": 1e-3,
        "kp": 0.5,
        "nu": 0.5,
        "warmup_steps": 150,
    },
    "augmented (ρ 1e-3)": {"update": "augmented", "rho": 1e-3},
    "augmented (ρ 1e-2)": {"update": "augmented", "rho": 1e-2},
}


def config(args, objective: dict, rule: dict, n_constraints: int) -> RunConfig:
    init = [1.0] * n_constraints if n_constraints > 1 else 1.0
    multiplier = {"init": init, "min": 1e-6, "max": 1e4, "warmup_steps": 20, **rule}
    return RunConfig.model_validate(
        {
            "data": {"root": args.data, "pixels": "bernoulli"},
            "model": {"name": "mlp", "latent_dim": 16},
            "objective": {**objective, "multiplier": multiplier},
            "train": {"epochs": args.epochs, "batch_size": 128, "lr": 1e-3, "seed": 0,
                      "device": args.device, "iwae_samples": 5},
        }
    )  # fmt: skip


def dynamics(result: TrainResult, names: list[str]) -> dict[str, str]:
    rows = result.history
    gaps = {n: [r[f"constraint/{n}"] - r[f"target/{n}"] for r in rows] for n in names}
    feasible = [all(gaps[n][i] <= 0 for n in names) for i in range(len(rows))]
    first = next((int(rows[i]["step"]) for i, ok in enumerate(feasible) if ok), None)
    flips = sum(
        (a > 0) != (b > 0) for n in names for a, b in zip(gaps[n], gaps[n][1:], strict=False)
    )
    test = result.test
    return {
        "first feasible step": "never" if first is None else str(first),
        "final test value − target": ", ".join(
            f"{n} {test[f'constraint/{n}'] - test[f'target/{n}']:+.1f}" for n in names
        ),
        "sign changes": str(flips),
        "final λ": ", ".join(f"{rows[-1][f'lambda/{n}']:.3g}" for n in names),
        "test KL": f"{test['kl']:.1f}",
    }


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=20)
    parser.add_argument("--out", default="benchmarks/multiplier_dynamics.png")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--rules", nargs="*", default=list(RULES), choices=list(RULES))
    args = parser.parse_args()
    runs: dict[str, dict[str, TrainResult | None]] = {}
    rows = []
    for case in args.cases:
        objective, names = CASES[case]
        runs[case] = {}
        for label in args.rules:
            rule = RULES[label]
            trainer = Trainer(config(args, objective, rule, len(names)))
            try:
                result = trainer.fit()
                cells = dynamics(result, names)
            except Diverged as exc:
                result, cells = None, {"first feasible step": f"diverged: {exc.reason}"}
            runs[case][label] = result
            rows.append({"case": case, "rule": label, **cells})
            print(f"{case} / {label}: {cells}", flush=True)
    print(f"\n{args.epochs:g} epochs, batch 128, {device_name(trainer.device)}\n")
    columns = ["case", "rule", "first feasible step", "final test value − target",
               "sign changes", "final λ", "test KL"]  # fmt: skip
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row.get(c, "") for c in columns) + " |")
    plot(runs, Path(args.out))
    print(f"\nfigure: {args.out}")


def plot(runs: dict[str, dict[str, TrainResult | None]], out: Path) -> None:
    fig, axes = plt.subplots(len(runs), 2, figsize=(12, 3.6 * len(runs)), squeeze=False)
    for (case, results), (ax_lam, ax_gap) in zip(runs.items(), axes, strict=True):
        names = CASES[case][1]
        ax_lam.set_prop_cycle(color=plt.cm.tab20.colors)
        ax_gap.set_prop_cycle(color=plt.cm.tab20.colors)
        for label, result in results.items():
            if result is None:
                continue
            steps = [r["step"] for r in result.history]
            name = names[0]
            ax_lam.plot(steps, [r[f"lambda/{name}"] for r in result.history], label=label)
            gap = [r[f"constraint/{name}"] - r[f"target/{name}"] for r in result.history]
            ax_gap.plot(steps, gap, label=label)
        ax_lam.set(title=f"{case}: λ ({names[0]})", xlabel="step", yscale="log")
        ax_gap.set(title=f"{case}: {names[0]} − target (nats)", xlabel="step")
        ax_gap.axhline(0, color="grey", lw=1, ls="--")
        ax_gap.set_ylim(-30, 60)
        ax_lam.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    main()
