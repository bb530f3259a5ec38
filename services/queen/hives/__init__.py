"""The hives the queen knows and how it talks to them.

- `registry` — pure: the hives, their health and load, and which hive owns which download
- `client` — the calls to a hive's `/v2` over httpx, hive failures mapped to ApiError
- `placement` — pure: which hive a download goes to
- `fan_out` — one call on many hives at once, each within a deadline; HIVE_UNREACHABLE when it runs out
"""
