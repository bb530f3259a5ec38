"""The JSON bodies of the hive's `/v2` and the queen's `/v1` routes, and where a hive's streams are.

- `hive` — the hive's `/v2` bodies (the queen sends and reads them too) and its stream URLs
- `queen` — the queen's `/v1` bodies
- `models` — the model store's bodies, the hive's `/v2/models` and the queen's `/v1/models`, and the
  `model` event
- `common` — what both share: the error body, and the include / exclude globs

Request bodies are validated with the shared patterns and limits (`shared/limits.py`); response
bodies are the fields the routes have always sent, in that order, so `/openapi.json` documents them
(README, "The hive's API" and "The queen's API"). A download state allows extra fields: the queen
passes on what its hive sent, and may only add to it. Error bodies are `ErrorBody` (README, "Errors").
"""
