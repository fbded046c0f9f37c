"""Prometheus metrics: counted by every serving process, exposed by one endpoint.

Each serving process counts into a small block of shared memory of its own
(`palfrey.metrics.block`): plain float slots at fixed offsets, incremented in place, no
lock and no system call per request. The process that serves `/metrics` (the supervisor
with workers, else the server itself) sums the blocks and hands the totals to
`prometheus_client` for the exposition (`palfrey.metrics.exposition`). Counters of a
worker that exited, crashed or was killed stay in its block, which the supervisor folds
into a running total before letting it go, so totals never go backwards across worker
restarts and rolling reloads; a single process hands its block across the re-exec of a
reload. docs/explanation/observability.md says why this and not prometheus_client's
multiprocess mode: measured, its per-request cost is several times the whole budget.

Serving processes never import prometheus_client; only the process that answers scrapes
does.
"""
