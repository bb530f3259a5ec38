"""rbee-queen: the hive registry and relay in front of the hives.

`main` builds the app; `settings`, `metrics`; `service` (QueenService: hive registration and health,
where a download goes, which hive owns it, the proxied `/v2` calls). The rooms: `api` (the routes),
`hives` (registry, client, placement, fan-out), `streams` (the hives' SSE relayed), `pulls` (fleet pulls).
"""
