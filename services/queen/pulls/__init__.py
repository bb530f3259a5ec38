"""Fleet pulls: one model onto many hives (README, "Fleet pulls").

- `plan` — pure: who fetches which blob from the hub, which peers each hive is told of, and what a
  pull's hives add up to
- `preflight` — pure: why a hive's plan stops the pull
- `state` — pure: a pull, and its state (`PullBody`) from its hives' download states
- `service` — preflight, start, find, state and cancel through the hives' `/v2`
- `feed` — pure: one pull's stream as its clients see it
- `streams` — the feeds of the pulls somebody watches, each hive followed through the relay
"""
