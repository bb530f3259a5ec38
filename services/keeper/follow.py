"""Following one download to its end: `rbee-keeper download` and `rbee-keeper watch`."""

from __future__ import annotations

from services.keeper.client import QueenError, QueenUnreachable, ReconnectPolicy
from services.keeper.context import EXIT_ERROR, EXIT_INTERRUPTED, TERMINAL_EXIT, Context
from services.keeper.format import Snapshot, terminal_message
from services.keeper.render import BarRenderer, JsonRenderer, PlainRenderer, Renderer

__all__ = ["cmd_download", "cmd_watch"]


def _make_renderer(ctx: Context) -> Renderer:
    if ctx.mode == "json":
        return JsonRenderer(ctx.out, ctx.err)
    if ctx.mode == "plain":
        return PlainRenderer(ctx.out)
    return BarRenderer(ctx.console())


def _follow(ctx: Context, snap: Snapshot) -> int:
    renderer = _make_renderer(ctx)
    policy = ReconnectPolicy(budget=ctx.args.reconnect_timeout)
    renderer.start(snap)
    try:
        for event in ctx.client.follow(snap.download_id, policy, on_reconnect=renderer.note):
            snap.apply(event)
            renderer.update(event, snap)
            if event.is_terminal:
                break
    except KeyboardInterrupt:
        renderer.stop()
        return _interrupted(ctx, snap)
    finally:
        renderer.stop()
    message = terminal_message(snap)
    if snap.status == "complete":
        ctx.say(message)
    else:
        ctx.err.write(message + "\n")
        ctx.err.flush()
    return TERMINAL_EXIT.get(snap.status, EXIT_ERROR)


def _interrupted(ctx: Context, snap: Snapshot) -> int:
    did = snap.download_id
    if ctx.args.cancel_on_interrupt:
        try:
            ctx.client.cancel(did)
        except (QueenError, QueenUnreachable) as exc:
            ctx.error(f"interrupted; could not cancel download {did}: {exc}")
            return EXIT_INTERRUPTED
        ctx.error(f"interrupted; cancelled download {did}")
        return EXIT_INTERRUPTED
    where = f" on {snap.hive_id}" if snap.hive_id else ""
    ctx.err.write(
        f"\nrbee-keeper: interrupted; download {did} keeps running{where}.\n"
        f"  follow it again: {ctx.hint_command('watch', did)}\n"
        f"  cancel it:       {ctx.hint_command('cancel', did)}\n"
    )
    ctx.err.flush()
    return EXIT_INTERRUPTED


def cmd_download(ctx: Context) -> int:
    args = ctx.args
    state, created = ctx.client.start_download(args.model_ref, args.hive, args.sha256, args.include, args.exclude)
    snap = Snapshot.from_state(state)
    if ctx.mode != "json":
        verb = "started" if created else "joined the running download of"
        ctx.say(f"{verb} {snap.name} on {snap.hive_id or '?'} (id {snap.download_id})")
    return _follow(ctx, snap)


def cmd_watch(ctx: Context) -> int:
    snap = Snapshot.from_state(ctx.client.download(ctx.args.download_id))
    if not snap.download_id:
        snap.download_id = ctx.args.download_id
    return _follow(ctx, snap)
