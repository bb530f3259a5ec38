"""The queen's HTTP face: thin routers that translate HTTP to calls on the services and back.

- `hives` — /v1/hives: list and register hives
- `downloads` — /v1/downloads: start, list, get and cancel a download on some hive; the streams
- `pulls` — /v1/pulls: fleet pulls, one model onto many hives
- `page` — `GET /` and its static files (the live page)
- `deps` — the services as FastAPI dependencies; `sse` — how every stream route answers
"""
