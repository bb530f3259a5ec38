"""Following one download to its end: `rbee-keeper download` and `rbee-keeper watch`; and what following
a stream takes whatever it follows (a download here, a fleet pull in `services/keeper/pull.py`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TextIO, TypeVar

from rich.console import Console

from services.keeper.client import QueenError, QueenUnreachable, ReconnectPolicy
from services.keeper.context import EXIT_ERROR, EXIT_INTERRUPTED, TERMINAL_EXIT, Context
from services.keeper.events import StreamEvent
from services.keeper.format import Snapshot, terminal_message
from services.keeper.render import BarRenderer, JsonRenderer, PlainRenderer, Renderer

__all__ = ["cmd_download", "cmd_watch", "interrupted", "make_renderer", "policy_of", "show_stream"]


class Followed(Protocol):
    def apply(self, event: StreamEvent) -> None: ...


F = TypeVar("F", bound=Followed)


def policy_of(ctx: Context) -> ReconnectPolicy:
    return ReconnectPolicy(budget=ctx.args.reconnect_timeout)


def show_stream(followed: F, events: Iterable[StreamEvent], renderer: Renderer[F]) -> bool:
    """Fold every event into `followed` and show it, up to the terminal one; False when Ctrl-C stopped it
    (from the first thing shown on: whoever saw it may press Ctrl-C, and is told how to get back)."""
    try:
        renderer.start(followed)
        for event in events:
            followed.apply(event)
            renderer.update(event, followed)
            if event.is_terminal:
                break
    except KeyboardInterrupt:
        return False
    finally:
        renderer.stop()
    return True


def interrupted(ctx: Context, what: str, target_id: str, where: str, cancel: Callable[[str], object]) -> int:
    """After Ctrl-C: cancel it (--cancel-on-interrupt), or say it keeps running and how to get back to it."""
    if ctx.args.cancel_on_interrupt:
        try:
            cancel(target_id)
        except (QueenError, QueenUnreachable) as exc:
            ctx.error(f"interrupted; could not cancel {what} {target_id}: {exc}")
            return EXIT_INTERRUPTED
        ctx.error(f"interrupted; cancelled {what} {target_id}")
        return EXIT_INTERRUPTED
    ctx.err.write(
        f"\nrbee-keeper: interrupted; {what} {target_id} keeps running{where}.\n"
        f"  follow it again: {ctx.hint_command('watch', target_id)}\n"
        f"  cancel it:       {ctx.hint_command('cancel', target_id)}\n"
    )
    ctx.err.flush()
    return EXIT_INTERRUPTED


def make_renderer(
    ctx: Context, plain: Callable[[TextIO], Renderer[F]], bars: Callable[[Console], Renderer[F]]
) -> Renderer[F]:
    """JSON lines under --json, else `plain` lines (not a terminal, --plain, NO_COLOR), else live `bars`."""
    if ctx.mode == "json":
        return JsonRenderer(ctx.out, ctx.err)
    if ctx.mode == "plain":
        return plain(ctx.out)
    return bars(ctx.console())


def _follow(ctx: Context, snap: Snapshot) -> int:
    renderer = make_renderer(ctx, PlainRenderer, BarRenderer)
    events = ctx.client.follow("download", snap.download_id, policy_of(ctx), on_reconnect=renderer.note)
    if not show_stream(snap, events, renderer):
        where = f" on {snap.hive_id}" if snap.hive_id else ""
        return interrupted(ctx, "download", snap.download_id, where, ctx.client.cancel)
    message = terminal_message(snap)
    if snap.status == "complete":
        ctx.say(message)
    else:
        ctx.err.write(message + "\n")
        ctx.err.flush()
    return TERMINAL_EXIT.get(snap.status, EXIT_ERROR)


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
