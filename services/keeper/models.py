"""`rbee-keeper models`, `rm`, `pin` and `unpin`: the fleet's model store through the queen (README,
"`rbee-keeper`"). The matrix is pure (`model_matrix`, `disk_rows`); the commands print it or the queen's JSON.

A model per row, a column per hive: `complete`, `partial NN%` (of the largest complete copy in the
fleet, when one is), `pinned`, with the size of that hive's copy; `-` where the hive has none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from services.keeper.client import QueenClient
from services.keeper.commands import print_table
from services.keeper.context import EXIT_ERROR, EXIT_OK, EXIT_USAGE, Context
from services.keeper.format import human_bytes

__all__ = [
    "cmd_models",
    "cmd_pin",
    "cmd_rm",
    "cmd_unpin",
    "delete_model",
    "disk_rows",
    "model_matrix",
    "pin_model",
    "repo_id_of",
]

_REPO = re.compile(r"(?:hf:)?([A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)?)")


def repo_id_of(text: str) -> str | None:
    """`org/repo` of `hf:org/repo` (or of `org/repo`; `repo` without a namespace), else None."""
    m = _REPO.fullmatch(text.strip())
    return m[1] if m else None


def _path(repo_id: str) -> str:
    return "/v1/models/" + "/".join(quote(part, safe="") for part in repo_id.split("/"))


def _hives(hives: str | None) -> dict[str, str]:
    return {"hives": hives} if hives else {}


def delete_model(
    client: QueenClient, repo_id: str, hives: str | None, revision: str | None, force: bool
) -> dict[str, Any]:
    params = _hives(hives)
    if revision:
        params["revision"] = revision
    if force:
        params["force"] = "true"
    return client.json_object("DELETE", _path(repo_id), params=params)


def pin_model(client: QueenClient, repo_id: str, hives: str | None, on: bool) -> dict[str, Any]:
    return client.json_object("PUT" if on else "DELETE", _path(repo_id) + "/pin", params=_hives(hives))


def _cell(holder: dict[str, Any], whole: int | None) -> str:
    size = int(holder.get("size_on_disk") or 0)
    if holder.get("complete"):
        state = "complete"
    elif whole:
        state = f"partial {min(99, size * 100 // whole)}%"
    else:
        state = "partial"
    pinned = ", pinned" if holder.get("pinned") else ""
    in_use = ", in use" if holder.get("in_use") else ""
    return f"{state} {human_bytes(size)}{pinned}{in_use}"


def model_matrix(fleet: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): MODEL, SIZE (its largest complete copy) and a column per hive."""
    hive_ids = sorted({str(d.get("hive_id")) for d in fleet.get("hives", [])})
    rows = []
    for model in fleet.get("models", []):
        holders = {str(h.get("hive_id")): h for h in model.get("hives", [])}
        complete = [int(h.get("size_on_disk") or 0) for h in holders.values() if h.get("complete")]
        whole = max(complete) if complete else None
        cells = [_cell(holders[h], whole) if h in holders else "-" for h in hive_ids]
        rows.append([str(model.get("repo_id")), human_bytes(whole) if whole else "?", *cells])
    return ["MODEL", "SIZE", *(h.upper() for h in hive_ids)], rows


def disk_rows(fleet: dict[str, Any]) -> list[list[str]]:
    """HIVE, USED, BUDGET (with the share used), FREE."""
    rows = []
    for disk in sorted(fleet.get("hives", []), key=lambda d: str(d.get("hive_id"))):
        used, budget = int(disk.get("used") or 0), disk.get("budget")
        share = f" ({used * 100 // budget}%)" if isinstance(budget, int) and budget > 0 else ""
        limit = f"{human_bytes(budget)}{share}" if isinstance(budget, int) else "none"
        rows.append([str(disk.get("hive_id")), human_bytes(used), limit, human_bytes(disk.get("free"))])
    return rows


def cmd_models(ctx: Context) -> int:
    fleet = ctx.client.json_object("GET", "/v1/models")
    if ctx.mode == "json":
        ctx.out.write(json.dumps(fleet) + "\n")
        return EXIT_OK
    headers, rows = model_matrix(fleet)
    if rows:
        print_table(ctx, "models", headers, rows)
    else:
        ctx.say("no models on any hive")
    disks = disk_rows(fleet)
    if disks:
        print_table(ctx, "disk", ["HIVE", "USED", "BUDGET", "FREE"], disks)
    for hive in fleet.get("unreachable_hives", []):
        ctx.error(f"warning: hive {hive} is unreachable; its models are not listed")
    return EXIT_OK


def _change(ctx: Context, what: str, call: Callable[[str], dict[str, Any]]) -> int:
    repo_id = repo_id_of(ctx.args.model)
    if repo_id is None:
        ctx.error(f"rbee-keeper: error: expected hf:org/repo, got {ctx.args.model!r}")
        return EXIT_USAGE
    body = call(repo_id)
    results = [r for r in body.get("results", []) if isinstance(r, dict)]
    if ctx.mode == "json":
        ctx.out.write(json.dumps(body) + "\n")
    else:
        for r in results:
            if r.get("ok"):
                ctx.say(what.format(repo=repo_id, hive=r.get("hive_id")))
            else:
                error = r.get("error") or {}
                ctx.error(f"{r.get('hive_id')}: {error.get('code', 'ERROR')}: {error.get('message', '')}")
    return EXIT_OK if results and all(r.get("ok") for r in results) else EXIT_ERROR


def cmd_rm(ctx: Context) -> int:
    args = ctx.args
    return _change(
        ctx, "removed {repo} from {hive}", lambda r: delete_model(ctx.client, r, args.hives, args.revision, args.force)
    )


def cmd_pin(ctx: Context) -> int:
    return _change(ctx, "pinned {repo} on {hive}", lambda r: pin_model(ctx.client, r, ctx.args.hives, on=True))


def cmd_unpin(ctx: Context) -> int:
    return _change(ctx, "unpinned {repo} on {hive}", lambda r: pin_model(ctx.client, r, ctx.args.hives, on=False))
