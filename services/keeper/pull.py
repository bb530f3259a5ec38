"""Fleet pulls, one model onto many hives: `rbee-keeper pull`, `pulls`, and `watch` / `cancel` of a pull's id."""

from __future__ import annotations

import json
from typing import Any

from services.keeper.client import QueenError, QueenUnreachable
from services.keeper.commands import print_table
from services.keeper.context import EXIT_ERROR, EXIT_OK, EXIT_USAGE, TERMINAL_EXIT, Context, describe, exit_for
from services.keeper.follow import interrupted, make_renderer, policy_of, show_stream
from services.keeper.format import human_speed, progress_cell
from services.keeper.pull_view import PullView, pull_message, sources_lines
from services.keeper.render import PlainPullRenderer, PullBarRenderer

__all__ = ["cmd_cancel_pull", "cmd_pull", "cmd_pulls", "cmd_watch_pull"]


def _sources(ctx: Context, view: PullView) -> list[str]:
    """Where each hive's bytes came from, asked of the queen once the pull ended (the stream does not say)."""
    try:
        body = ctx.client.pull(view.pull_id)
        urls = {str(h.get("url")): str(h.get("hive_id")) for h in ctx.client.hives()}
    except (QueenError, QueenUnreachable):
        return []  # the pull has ended either way; this is only its summary
    return sources_lines(PullView.from_body(body), urls)


def _follow(ctx: Context, view: PullView) -> int:
    renderer = make_renderer(ctx, PlainPullRenderer, PullBarRenderer)
    events = ctx.client.follow("pull", view.pull_id, policy_of(ctx), on_reconnect=renderer.note)
    if not show_stream(view, events, renderer):
        where = f" on {len(view.hives)} hives ({', '.join(view.hives)})"
        return interrupted(ctx, "pull", view.pull_id, where, ctx.client.cancel_pull)
    lines = pull_message(view)
    if view.status in ("complete", "failed"):
        lines += _sources(ctx, view)
    if view.status == "complete":
        for line in lines:
            ctx.say(line)
    else:
        ctx.err.write("".join(line + "\n" for line in lines))
        ctx.err.flush()
    return TERMINAL_EXIT.get(view.status, EXIT_ERROR)


def _hive_ids(values: list[str]) -> list[str] | str:
    """--hives all, or hive ids separated by commas (the option repeatable)."""
    ids = [h.strip() for value in values for h in value.split(",") if h.strip()]
    return "all" if ids == ["all"] else list(dict.fromkeys(ids))


def _refused(ctx: Context, exc: QueenError) -> int:
    """The queen refused the pull: its preflight names every hive that failed and why; nothing started."""
    failures = exc.body.get("error", {}).get("failures")
    if not isinstance(failures, list) or not failures:
        ctx.error(describe(exc))
        return exit_for(exc)
    n = len(failures)
    ctx.error(f"{exc.code}: nothing started, the preflight failed on {n} hive{'s' if n != 1 else ''}:")
    for failure in failures:
        ctx.err.write(f"  {failure.get('hive_id')}: {failure.get('code')}: {failure.get('message')}\n")
    ctx.err.flush()
    return exit_for(exc)


def cmd_pull(ctx: Context) -> int:
    args = ctx.args
    hive_ids = _hive_ids(args.hives)
    if not hive_ids or ("all" in hive_ids and hive_ids != "all"):
        ctx.error("--hives takes `all` or hive ids separated by commas")
        return EXIT_USAGE
    try:
        started = ctx.client.start_pull(args.model_ref, hive_ids, args.include, args.exclude)
    except QueenError as exc:
        return _refused(ctx, exc)
    view = PullView.started(started, args.model_ref)
    if ctx.mode != "json":
        commit = f" at commit {view.commit}" if view.commit else ""
        ctx.say(f"started pull {view.pull_id}: {view.name}{commit} onto {', '.join(view.hives)}")
    return _follow(ctx, view)


def cmd_watch_pull(ctx: Context) -> int:
    return _follow(ctx, PullView.from_body(ctx.client.pull(ctx.args.download_id)))


def cmd_cancel_pull(ctx: Context) -> int:
    pull_id = ctx.args.download_id
    body = ctx.client.cancel_pull(pull_id)
    view = PullView.from_body(body)
    cancelled = view.count("cancelled")
    if not cancelled:
        ctx.error(f"pull {pull_id} already finished ({view.status}); nothing to cancel")
        return EXIT_ERROR
    if ctx.mode == "json":
        ctx.out.write(json.dumps(body) + "\n")
    else:
        ctx.say(f"cancelled {pull_id} ({view.name}: cancelled on {cancelled} of {len(view.hives)} hives)")
    return EXIT_OK


def _row(body: dict[str, Any]) -> list[str]:
    view = PullView.from_body(body)
    status = view.status + (f" ({', '.join(view.failed_hives)})" if view.failed_hives else "")
    speed = human_speed(view.speed_bps) if view.status == "running" else "-"
    return [view.pull_id, view.model_ref or "-", status, progress_cell(view), view.hives_done, speed]


def cmd_pulls(ctx: Context) -> int:
    body = ctx.client.pulls()
    if ctx.mode == "json":
        ctx.out.write(json.dumps(body) + "\n")
    elif body.get("pulls"):
        rows = [_row(p) for p in body["pulls"]]
        print_table(ctx, "pulls", ["ID", "MODEL", "STATUS", "PROGRESS", "HIVES", "SPEED"], rows)
    else:
        ctx.say("no pulls")
    for hive in body.get("unreachable_hives", []):
        ctx.error(f"warning: hive {hive} is unreachable; its pulls may be missing or incomplete")
    return EXIT_OK
