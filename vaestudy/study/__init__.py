"""Studies: study files (`spec`), checks before a start (`preflight`), a run in stages
(`runner`: `session` -> `tuner` -> `outcome`), the Optuna search (`search`, `ledger`),
trials in Ray workers (`trial`, `trainables`), confirmation (`confirm`), the cluster
(`cluster`) and what stops a study in bounded time (`interrupts`, `disk_watch`,
`server_watch`, `isolation`)."""
