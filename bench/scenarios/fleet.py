"""Scenario 8 (`--only fleet`): a fleet pull (#15), one model onto many hives through the queen, the hub's
uplink capped, against every hive pulling it on its own and against one hive alone.

The test hub (services/modelserver/hub.py, on this process's threads) sends every body, its CDN's and
its own, through one `Uplink`: a total byte rate over all connections, the uplink a cluster shares.
Each trial starts fresh processes with fresh models dirs, so nothing is held from an earlier trial;
every hive's snapshot is checked file by file (paths and sha256 against the hub's) once the clock
stops, so a fast wrong answer counts as a failure, not as a time.
"""

from __future__ import annotations

from bench import fleet_runs
from bench.context import Context, Trial, hive_fetch, rounds, size_text
from bench.fleet_runs import QUEEN_ENV, Trials
from bench.hub_models import publish
from bench.procs import CpuShare
from bench.report import Measurement, Ratio, Section, Target, ratio
from services.modelserver.published import Published, shard_names

__all__ = ["fleet"]


FLEET_REPO = "bench/fleet"

SHARDS = 4

HUB_BYTES_GOAL = 1.05  # (issue #25) the fleet's hub bytes over the model's size

WALL_GOAL = 1.1  # (issue #25) the fleet's wall time over one hive's alone


def fleet(ctx: Context) -> Section:
    n, shard, uplink = ctx.sizes.fleet_hives, ctx.sizes.fleet_shard, ctx.sizes.fleet_uplink_bps
    hub = ctx.hub()
    model = publish(ctx, FLEET_REPO, dict.fromkeys(shard_names(SHARDS), shard))
    small = len(model.files) - SHARDS
    section = Section(
        "fleet",
        f"8. Fleet pull: {n} hives, a {size_text(model.size)} model of {SHARDS} shards and {small} files, "
        f"the hub's uplink capped at {uplink / 1e6:g} MB/s",
    )
    alone_floor = model.size / uplink
    timeout = 120 + 3 * n * alone_floor
    section.method = _method(model, n, shard, uplink)
    section.commands = _commands(model, n, uplink)
    m_fleet = section.measure(f"fleet pull, {n} hives (POST -> the pull's complete)", "s")
    m_first = section.measure("fleet pull: the first hive's complete", "s")
    compare = not ctx.tiny  # files that small are never split: HIVE_SEGMENTS=1 would change nothing
    m_fleet1 = section.measure(f"fleet pull, {n} hives, HIVE_SEGMENTS=1 (for comparison)", "s") if compare else None
    m_indep = section.measure(f"{n} independent pulls (POSTs -> the last complete; one run)", "s")
    m_alone = section.measure("one hive alone (POST -> complete)", "s")
    trials = Trials(ctx, section, model, timeout, n)
    trials.ratios = {
        "fleet": section.measure("fleet pull: hub bytes / model size", "x"),
        "independent": section.measure(f"{n} independent pulls: hub bytes / model size", "x"),
        "alone": section.measure("one hive alone: hub bytes / model size", "x"),
    }
    if m_fleet1 is not None:
        trials.ratios["fleet, HIVE_SEGMENTS=1"] = section.measure(
            "fleet pull, HIVE_SEGMENTS=1: hub bytes / model size", "x"
        )

    def fleet_trial(name: str, settings: dict[str, str], first: Measurement | None) -> Trial:
        def trial() -> float:
            scope, run_dir = fleet_runs.fresh(ctx, "fleet")
            with scope:
                hives, models = fleet_runs.hives(ctx, run_dir, n, hub, settings)
                queen_env = {**QUEEN_ENV, "QUEEN_HIVES": ",".join(f"{h.name}={h.url}" for h in hives)}
                queen = ctx.prepare("queen", "services.queen.main", queen_env)
                fleet_runs.start(ctx, scope, [*hives, queen])
                fleet_runs.healthy(queen, len(hives))
                trials.start()
                cpu = CpuShare().start()
                seconds, ends, state = fleet_runs.pull(queen, model, timeout)
                trials.took(name, cpu.stop())
                if first is not None:
                    first.runs.append(min(ends.values(), default=seconds))
                hub_says = sum(p["sources"].get("hub", 0) for p in state["hives"])
                peers = sum(v for p in state["hives"] for k, v in p["sources"].items() if k.startswith("http"))
                trials.sources.setdefault(name, []).append(
                    f"{hub_says / 1e6:.0f} MB from the hub, {peers / 1e6:.0f} MB from peers; each hive's end "
                    + ", ".join(f"{ends[h]:.1f}" for h in sorted(ends))
                    + " s"
                )
                fleet_runs.check_all(model, models)
                return seconds

        return trial

    def independent_trial() -> float:
        scope, run_dir = fleet_runs.fresh(ctx, "independent")
        with scope:
            hives, models = fleet_runs.hives(ctx, run_dir, n, hub)
            fleet_runs.start(ctx, scope, hives)
            trials.start()
            cpu = CpuShare().start()
            seconds, ends = fleet_runs.at_once(hives, model, timeout)
            trials.took("independent", cpu.stop())
            trials.sources.setdefault("independent", []).append(
                "each hive's end " + ", ".join(f"{e:.1f}" for e in ends) + " s"
            )
            fleet_runs.check_all(model, models)
            return seconds

    def alone_trial() -> float:
        scope, run_dir = fleet_runs.fresh(ctx, "alone")
        with scope:
            (hive,), models = fleet_runs.hives(ctx, run_dir, 1, hub)
            fleet_runs.start(ctx, scope, [hive])
            trials.start()
            cpu = CpuShare().start()
            seconds, _ = hive_fetch(hive.url, model.ref, timeout)
            trials.took("alone", cpu.stop())
            fleet_runs.check_all(model, models)
            return seconds

    hub.uplink.set_rate(uplink)
    try:
        ctx.log(f"scenario 8: {model.size / 1e6:.0f} MB onto {n} hives, uplink {uplink / 1e6:g} MB/s")
        plan: list[tuple[Measurement, Trial]] = [(m_fleet, fleet_trial("fleet", {}, m_first)), (m_alone, alone_trial)]
        if m_fleet1 is not None:
            plan.insert(1, (m_fleet1, fleet_trial("fleet, HIVE_SEGMENTS=1", {"HIVE_SEGMENTS": "1"}, None)))
        rounds(ctx, section, plan)
        rounds(ctx, section, [(m_indep, independent_trial)], runs=1)  # the uplink's arithmetic: once is enough
    finally:
        hub.uplink.set_rate(None)

    r_wall = ratio(m_fleet, m_alone)
    section.ratios = [
        Ratio("fleet / one hive alone", r_wall, "time ratio, lower is better"),
        Ratio(f"{n} independent / one hive alone", ratio(m_indep, m_alone), "time ratio"),
        Ratio(f"fleet / {n} independent", ratio(m_fleet, m_indep), "time ratio"),
    ]
    delivered = {"fleet": (m_fleet, n), f"{n} independent": (m_indep, n), "one hive alone": (m_alone, 1)}
    if m_fleet1 is not None:
        section.ratios.insert(
            1, Ratio("fleet, HIVE_SEGMENTS=1 / one hive alone", ratio(m_fleet1, m_alone), "time ratio, for comparison")
        )
        delivered["fleet, HIVE_SEGMENTS=1"] = (m_fleet1, n)
    else:
        section.notes.append("fleet, HIVE_SEGMENTS=1 not run: files as small as `--tiny` makes them are never split")
    _notes(section, trials, delivered, uplink)
    section.targets = [
        Target(
            f"fleet: hub bytes <= {HUB_BYTES_GOAL}x the model", trials.ratios["fleet"].median, HUB_BYTES_GOAL, "<=", "x"
        ),
        Target(f"fleet wall time <= {WALL_GOAL}x one hive's alone", r_wall, WALL_GOAL, "<=", "x"),
    ]
    return section


def _method(model: Published, n: int, shard: int, uplink: int) -> list[str]:
    small = len(model.files) - SHARDS
    alone_floor = model.size / uplink
    return [
        f"The test hub (`services/modelserver/hub.py`, on the harness's threads) holds `{FLEET_REPO}` at one "
        f"commit: {SHARDS} safetensors shards of {size_text(shard)} (LFS, through its CDN, a second host) and "
        f"{small} small files (config, tokenizer, index, `.gitattributes`; served by the hub itself), "
        f"{model.size / 1e6:.0f} MB in all. Its uplink is capped at {uplink / 1e6:g} MB/s in total: one token "
        "bucket (`cdn.Uplink`, `Hub(uplink_bps=...)`) that every body the CDN and the hub send, over all their "
        f"connections, draws from. So one hive alone needs at least {alone_floor:.1f} s, and {n} hives "
        f"pulling on their own at least {n * alone_floor:.0f} s.",
        "Every trial starts fresh processes with empty models dirs (default hive settings unless named): "
        f"**fleet**: {n} `rbee-hive` processes and an `rbee-queen` (`QUEEN_HIVES` names them; the pull is sent "
        f'once its health checks find every hive up), `POST /v1/pulls {{"model_ref": "{model.ref}", "hive_ids": '
        '"all"}`, timed to the pull\'s terminal `complete` event on `GET /v1/pulls/{id}/stream`; **fleet, '
        "HIVE_SEGMENTS=1**: the same with every hive on one connection per file (for comparison, no target); "
        f'**{n} independent**: {n} hives, each its own `POST /v2/downloads {{"model_ref": "{model.ref}"}}`, '
        "all sent at the same moment (no queen, no peers), timed to the last hive's `complete` (one run "
        "whatever `--runs` says: it is bound by the uplink); **one hive alone**: the same POST on one hive, "
        "timed to its `complete`.",
        "Hub bytes: what the CDN sent (`total_bytes_sent()`, body bytes really written) and what the hub itself "
        "sent (small files, API answers) during the trial, over the model's size.",
        "After the clock stops every hive's snapshot (`models--bench--fleet/snapshots/<commit>`) must hold "
        "exactly the commit's files, each with the hub's sha256; a failed check is a failed run. The runs "
        "rotate the order of the trials; `sync` runs before and after each.",
        f"All {n} hives, the queen and the hub share this machine's cores and disk: in the fleet pull every "
        f"byte of the model is received, hashed and written {n} times and served to peers {n - 1} times on "
        "the same CPUs, which a real cluster spreads over its nodes. The notes give the CPU each trial used.",
    ]


def _commands(model: Published, n: int, uplink: int) -> list[str]:
    ids = ",".join(f"hive-{i + 1:02d}=<hive {i + 1}>" for i in range(n))
    return [
        f"Hub(uplink_bps={uplink})   # the test hub in the harness; HF_ENDPOINT=<hub> for every hive",
        f"{n} x rbee-hive (HIVE_MODELS_DIR=<fresh dir>); QUEEN_HIVES={ids} rbee-queen",
        f'POST {{queen}}/v1/pulls {{"model_ref": "{model.ref}", "hive_ids": "all"}}; '
        "GET {queen}/v1/pulls/{id}/stream until its terminal event",
        f"{n} x HIVE_SEGMENTS=1 rbee-hive; the same queen and POST",
        f'{n} x rbee-hive; on each at once: POST /v2/downloads {{"model_ref": "{model.ref}"}}; '
        "GET /v2/downloads/{id}/stream",
        f'rbee-hive; POST /v2/downloads {{"model_ref": "{model.ref}"}}; GET /v2/downloads/{{id}}/stream',
    ]


def _notes(section: Section, trials: Trials, delivered: dict[str, tuple[Measurement, int]], uplink: int) -> None:
    size = trials.model.size
    rates = [f"{name}: {k * size / m.median / 1e6:.0f} MB/s" for name, (m, k) in delivered.items() if m.median]
    if rates:
        section.notes.append(
            f"Delivered onto the hives (hives x model size / median wall time; the uplink is {uplink / 1e6:g} "
            f"MB/s): {'; '.join(rates)}"
        )
    for name, runs in trials.sources.items():
        account = " by the hives' own account (`sources`)" if name.startswith("fleet") else ""
        section.notes.append(f"{name}{account}, per run: {'; '.join(runs)}")
    for name, runs in trials.traffic.items():
        section.notes.append(f"{name}, through the hub's uplink, per run: {'; '.join(runs)}")
    for name, runs in trials.cpu.items():
        section.notes.append(f"{name}, CPU while it ran, per run: {'; '.join(runs)}")
