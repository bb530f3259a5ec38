"""The one-shot commands: `rbee-keeper ls`, `cancel` and `hives`; the tables they print."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from services.keeper.client import QueenError
from services.keeper.context import EXIT_ERROR, EXIT_OK, Context
from services.keeper.format import Snapshot, display_name, files_text, format_table, human_speed, progress_cell

__all__ = ["cmd_cancel", "cmd_hives", "cmd_ls", "print_table"]


def print_table(ctx: Context, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    if ctx.mode == "rich":
        table = Table(title=title, title_justify="left")
        for header in headers:  # only the long free-text columns may wrap
            table.add_column(header, overflow="fold", no_wrap=header not in ("MODEL", "URL"))
        for row in rows:
            table.add_row(*row)
        ctx.console().print(table)
        return
    for line in format_table(headers, rows):
        ctx.out.write(line + "\n")
    ctx.out.flush()


def _hive_name(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("hive_id") or item.get("id") or item)
    return str(item)


def cmd_ls(ctx: Context) -> int:
    status = ctx.args.status
    body = ctx.client.downloads(status)
    downloads = [d for d in body.get("downloads", []) if status is None or d.get("status") == status]
    unreachable = [_hive_name(h) for h in body.get("unreachable_hives", [])]
    if ctx.mode == "json":
        ctx.out.write(json.dumps({**body, "downloads": downloads}) + "\n")
    else:
        rows = []
        for state in downloads:
            snap = Snapshot.from_state(state)
            speed = human_speed(snap.speed_bps or 0) if snap.status == "downloading" else "-"
            files = files_text(snap) or "-"
            model = snap.model_ref or "-"
            rows.append([snap.download_id, snap.hive_id or "-", model, snap.status, progress_cell(snap), files, speed])
        headers = ["ID", "HIVE", "MODEL", "STATUS", "PROGRESS", "FILES", "SPEED"]
        if rows:
            print_table(ctx, "downloads", headers, rows)
        else:
            ctx.say("no downloads" + (f" with status {status}" if status else ""))
    for hive in unreachable:
        ctx.error(f"warning: hive {hive} is unreachable; its downloads are not listed")
    return EXIT_OK


def cmd_cancel(ctx: Context) -> int:
    did = ctx.args.download_id
    try:
        state = ctx.client.cancel(did)
    except QueenError as exc:
        finished = exc.body.get("error", {}).get("state") if exc.status == 409 else None
        if isinstance(finished, dict):
            ctx.error(f"download {did} already finished ({finished.get('status', '?')}); nothing to cancel")
            return EXIT_ERROR
        raise
    if ctx.mode == "json":
        ctx.out.write(json.dumps(state) + "\n")
    else:
        snap = Snapshot.from_state(state)
        ctx.say(f"cancelled {did} ({display_name(snap.model_ref)} on {snap.hive_id or '?'})")
    return EXIT_OK


def _health(hive: dict[str, Any]) -> str:
    if isinstance(hive.get("health"), str):
        return str(hive["health"])
    if isinstance(hive.get("healthy"), bool):
        return "healthy" if hive["healthy"] else "unhealthy"
    return "?"


def cmd_hives(ctx: Context) -> int:
    hives = ctx.client.hives()
    if ctx.mode == "json":
        ctx.out.write(json.dumps({"hives": hives}) + "\n")
        return EXIT_OK
    if not hives:
        ctx.say("no hives registered")
        return EXIT_OK
    rows = []
    for hive in hives:
        active = hive.get("active_downloads", hive.get("active", "-"))
        health = _health(hive)
        if health != "healthy" and hive.get("last_error"):
            health += f" ({hive['last_error']})"
        rows.append([_hive_name(hive), str(hive.get("url", "-")), health, str(active)])
    print_table(ctx, "hives", ["ID", "URL", "HEALTH", "ACTIVE"], rows)
    return EXIT_OK
