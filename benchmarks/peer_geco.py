"""The peer: `studies/cpu/geco.yaml` as a careful researcher writes it by hand, without vaestudy.

    python -m benchmarks.peer_geco --data ../shared/data --out OUT_DIR [--trials 16] [--jobs 2]

Optuna's own `study.optimize` (TPE, seed 0, the yardstick and κ as constraints, `--jobs`
threads), a plain PyTorch GECO loop (Rezende & Viola 2018) on tensors resident on the device
(fresh Bernoulli samples per batch, no DataLoader, one host sync per trial), and MLflow on a
SQLite file (a run per trial: params, a trajectory point every `LOG_EVERY` steps, validation and
test metrics). The same space, budget and model as the study; it writes `OUT_DIR/summary.json`
(per trial: κ, validation and test recon and KL) for `benchmarks/vs_script.py`. All values are
nats per example.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import optuna
import torch
import torch.nn.functional as F
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from torch import nn
from torchvision.datasets import MNIST

EPOCHS, BATCH, LR, LATENT, HIDDEN = 8, 128, 1e-3, 16, 512
LAMBDA0, LAMBDA_MIN, LAMBDA_MAX, WARMUP = 1.0, 1e-6, 1e3, 60
YARDSTICK = 125.0  # recon <= 125 nats on held-out data
LOG_EVERY = 10


class Vae(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        h, q = HIDDEN, HIDDEN // 4
        self.enc = nn.Sequential(
            nn.Linear(784, h), nn.ReLU(), nn.Linear(h, q), nn.ReLU(), nn.Linear(q, 2 * LATENT)
        )
        self.dec = nn.Sequential(
            nn.Linear(LATENT, q), nn.ReLU(), nn.Linear(q, h), nn.ReLU(), nn.Linear(h, 784)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(recon, KL) per example: −log p(x|z) for one z ~ q(z|x), and KL[q(z|x) || N(0, I)]."""
        mean, logvar = self.enc(x).chunk(2, dim=-1)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        recon = F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
        return recon, kl


def load(root: str, device: str) -> dict[str, torch.Tensor]:
    """Train/validation/test on the device: 10% of train held out (seed 0); held-out splits
    binarised once."""
    g = torch.Generator().manual_seed(0)
    train = MNIST(root, train=True, download=False).data.reshape(-1, 784).float() / 255
    test = MNIST(root, train=False, download=False).data.reshape(-1, 784).float() / 255
    order = torch.randperm(len(train), generator=g)
    n_val = len(train) // 10
    val = torch.bernoulli(train[order[:n_val]], generator=g)
    return {"train": train[order[n_val:]].to(device), "val": val.to(device),
            "test": torch.bernoulli(test, generator=g).to(device)}  # fmt: skip


@torch.no_grad()
def evaluate(model: Vae, x: torch.Tensor) -> dict[str, float]:
    recon, kl = model(x)
    return {"recon": recon.mean().item(), "kl": kl.mean().item()}


def train_geco(data, kappa: float, nu: float, ema: float, seed: int, client, run_id: str):
    """GECO: minimise KL + λ·(C + stopgrad(C_ma − C)), C = recon − κ; λ <- λ·exp(ν·C_ma)."""
    torch.manual_seed(seed)
    device = data["train"].device
    model = Vae().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    lam, c_ma = torch.tensor(LAMBDA0, device=device), None
    steps_per_epoch = len(data["train"]) // BATCH
    rows = []
    for step in range(EPOCHS * steps_per_epoch):
        if step % steps_per_epoch == 0:
            order = torch.randperm(len(data["train"]), device=device)
        i = step % steps_per_epoch
        x = torch.bernoulli(data["train"][order[i * BATCH : (i + 1) * BATCH]])
        recon, kl = model(x)
        c = recon.mean() - kappa
        c_next = c.detach() if c_ma is None else ema * c_ma + (1 - ema) * c.detach()
        loss = kl.mean() + lam * (c + (c_next - c).detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        c_ma = c_next
        if step + 1 > WARMUP:
            lam = (lam * torch.exp(nu * c_ma)).clamp(LAMBDA_MIN, LAMBDA_MAX)
        if (step + 1) % LOG_EVERY == 0:
            rows.append(torch.stack([recon.mean(), kl.mean(), c_ma, lam]).detach())
    points = torch.stack(rows).tolist()  # the trial's one host sync for its trajectory
    names = ("recon", "kl", "constraint", "lambda")
    metrics = [
        Metric(f"train/{k}", v, 0, (j + 1) * LOG_EVERY)
        for j, row in enumerate(points)
        for k, v in zip(names, row, strict=True)
    ]
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    model.eval()
    return evaluate(model, data["val"]), evaluate(model, data["test"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # one core per trial, `--jobs` trials at a time
    data = load(args.data, args.device)
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.create_experiment("peer-geco")
    trials = []

    def objective(trial: optuna.Trial) -> float:
        kappa = trial.suggest_float("kappa", 100.0, 160.0)
        nu = trial.suggest_float("nu", 3.0e-4, 3.0e-2, log=True)
        ema = trial.suggest_float("ema", 0.5, 0.99)
        run_id = client.create_run(experiment, run_name=f"trial {trial.number}").info.run_id
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in trial.params.items()])
        val, test = train_geco(data, kappa, nu, ema, trial.number, client, run_id)
        finals = [Metric(f"{split}/{k}", v, 0, 0) for split, m in (("val", val), ("test", test))
                  for k, v in m.items()]  # fmt: skip
        client.log_batch(run_id, metrics=finals)
        client.set_terminated(run_id)
        ok = all(math.isfinite(v) for v in val.values())
        trial.set_constraint("yardstick", val["recon"] - YARDSTICK if ok else math.inf)
        trial.set_constraint("own", val["recon"] - kappa if ok else math.inf)
        trials.append({"kappa": kappa, "val": val, "test": test})
        return val["kl"] if ok else math.inf

    sampler = optuna.samplers.TPESampler(seed=0)  # it reads the trials' constraints
    study = optuna.create_study(sampler=sampler, storage=f"sqlite:///{out / 'optuna.db'}")
    study.optimize(objective, n_trials=args.trials, n_jobs=args.jobs)
    (out / "summary.json").write_text(json.dumps(trials))


if __name__ == "__main__":
    main()
