"""The hives' SSE streams, relayed to the queen's clients.

- `aggregate` — every download on every hive, from one connection per hive (`AggregateHub`)
- `followers` — pure: the per-download clients the aggregated stream serves
- `relay` — one hive's per-download stream, shared by its clients, reconnected within a budget
- `subscription` — pure: one relayed download as its clients see it
- `download_feed` — what one client of one download reads, from the aggregate or the relay
- `upstream` — pure: decoding a hive's events, and the relay counters
"""
