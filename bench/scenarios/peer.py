"""Scenario 9 (`--only peer`): peers at line rate (#25). One model copied from a peer hive against the same
from the test hub's CDN against `curl` from nginx, in one run; a hive serving a blob against nginx serving
the same file; and the fleet pull on paper (services/queen/pulls/simulate.py) at 8, 100 and 1,000 hives.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from bench import fleet_runs
from bench.context import Context, Trial, check_size, hive_fetch, rounds, size_text
from bench.hub_models import publish
from bench.procs import Service, run_checked
from bench.report import Ratio, Section, Target, ratio
from services.modelserver.published import Published
from services.queen.pulls.simulate import CLUSTER, HUB_BOUND, Links, table

__all__ = ["peer"]

PEER_REPO = "bench/peer"
SHARD = "model.safetensors"
COPY_GOAL = 1.0  # the peer copy's time over the hub copy's
SERVE_GOAL = 0.9  # the hive's blob throughput over nginx's
SIM_GOAL = 2.0  # the 1,000-hive simulation's time over one hive alone
SIM_MODEL = [2 * 1024**3] * 8 + [10_000]  # a 16 GiB model of 8 shards and a small file
MIN_RUNS = 7  # the copies' times vary by ~10% from run to run (the disk): their medians need more runs


def peer(ctx: Context) -> Section:
    size = ctx.sizes.big
    hub = ctx.hub()
    model = publish(ctx, PEER_REPO, {SHARD: size})
    section = Section("peer", f"9. Peers at line rate: a {size_text(model.size)} model from a peer, the hub, nginx")
    timeout = 120 + size / (10 * 1024 * 1024)
    section.method = _method(model)
    m_hub = section.measure("hub copy: from the test hub's CDN (POST -> complete)", "s")
    m_peer = section.measure("peer copy: from a hive that holds it (POST with sources -> complete)", "s")
    m_curl = section.measure("curl from nginx, the same blob to a file", "s")
    m_serve = section.measure("curl of the hive's GET /v2/blobs/{digest} to /dev/null", "s")
    m_nginx = section.measure("curl of nginx serving the same file to /dev/null", "s")

    seeds, seed_dir = fleet_runs.fresh(ctx, "peer-seeder")
    with seeds:
        (seeder,), (seeder_models,) = fleet_runs.hives(ctx, seed_dir, 1, hub)
        fleet_runs.start(ctx, seeds, [seeder])
        hive_fetch(seeder.url, model.ref, timeout)  # (untimed: the peer's copy)
        plan = httpx.post(f"{seeder.url}/v2/plans", json={"model_ref": model.ref}, timeout=30).json()
        digests = {f["path"]: f["digest"] for f in plan["files"]}
        blob = next(seeder_models.rglob(f"blobs/{digests[SHARD]}"))
        _warm(blob)
        nginx = ctx.nginx()
        nginx_url = nginx.url + ctx.link("peer/blob.bin", blob)
        blob_url = f"{seeder.url}/v2/blobs/{digests[SHARD]}"
        sources = {d: [seeder.url] for d in digests.values()}
        out = ctx.workdir / "out" / "peer-curl.bin"
        out.parent.mkdir(parents=True, exist_ok=True)

        def copy_trial(body: dict[str, Any]) -> Trial:
            def trial() -> float:
                scope, run_dir = fleet_runs.fresh(ctx, "peer-copy")
                with scope:
                    (hive,), models = fleet_runs.hives(ctx, run_dir, 1, hub)
                    fleet_runs.start(ctx, scope, [hive])
                    seconds, _ = hive_fetch(hive.url, model.ref, timeout, **body)
                    fleet_runs.check_all(model, models)
                    return seconds

            return trial

        def curl(url: str, target: Path | None) -> Trial:
            def trial() -> float:
                t0 = time.perf_counter()
                try:
                    run_checked(["curl", "-sf", "-o", str(target or "/dev/null"), url], timeout)
                    seconds = time.perf_counter() - t0
                    if target is not None:
                        check_size(target, size)
                finally:
                    if target is not None:
                        ctx.remove(target)
                return seconds

            return trial

        ctx.log(f"scenario 9: {model.size / 1e6:.0f} MB from a peer, the hub and nginx")
        rounds(
            ctx,
            section,
            [
                (m_hub, copy_trial({})),
                (m_peer, copy_trial({"commit": model.commit, "sources": sources})),
                (m_curl, curl(nginx_url, out)),
                (m_serve, curl(blob_url, None)),
                (m_nginx, curl(nginx_url, None)),
            ],
            runs=max(ctx.runs, MIN_RUNS),
        )
        section.notes.append(f"the serving hive sent {_served(seeder) / 1e6:.0f} MB to peers and curl in all")
    r_copy = ratio(m_peer, m_hub)
    r_serve = ratio(m_nginx, m_serve)  # throughputs: nginx's time over the hive's
    section.ratios = [
        Ratio("peer copy / hub copy", r_copy, "time ratio, lower is better"),
        Ratio("peer copy / curl from nginx", ratio(m_peer, m_curl), "time ratio"),
        Ratio("hive's blob serving / nginx", r_serve, "throughput ratio, higher is better"),
    ]
    sim_worst = _simulation(section)
    section.targets = [
        Target(f"peer copy <= {COPY_GOAL}x the hub copy's time", r_copy, COPY_GOAL, "<=", "x"),
        Target(f"blob serving >= {SERVE_GOAL}x nginx's throughput", r_serve, SERVE_GOAL, ">=", "x"),
        Target(f"1,000-hive simulation <= {SIM_GOAL}x one hive alone", sim_worst, SIM_GOAL, "<=", "x"),
    ]
    return section


def _warm(blob: Path) -> None:
    """Read the seeder's blob once, as the test hub's file is: the seeder wrote it with O_DIRECT, past
    the page cache, and without this the first copy from it read the disk (1.5-1.8 s against 1.1-1.2)."""
    with blob.open("rb") as f:
        while f.read(16 * 1024 * 1024):
            pass


def _served(hive: Service) -> float:
    text = httpx.get(f"{hive.url}/metrics", timeout=10).text
    return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith("rbee_hive_bytes_served_total")), 0)


def _simulation(section: Section) -> float:
    """The model's table in the notes; the worst 1,000-hive ratio at the chosen FAN_OUT (2)."""
    worst = 0.0
    presets: dict[str, Links] = {"cluster": CLUSTER, "hub-bound": HUB_BOUND}
    for name, links in presets.items():
        rows = table(links, SIM_MODEL)
        section.notes.append(
            f"simulation, {name} links (hub uplink {links.hub_uplink_bps / 1e6:g} MB/s, hub path "
            f"{links.hub_path_bps / 1e6:g} MB/s, NIC {links.nic_bps / 1e6:g} MB/s, disk {links.disk_bps / 1e6:g} MB/s; "
            "a 16 GiB model of 8 shards): "
            + "; ".join(
                f"{n} hives fan-out {f}: {o.fleet_secs:.0f} s against {o.alone_secs:.0f} s alone "
                f"({o.ratio:.2f}x, hub {o.hub_copies:.2f}x, depth {o.depth})"
                for n, f, o in rows
            )
        )
        worst = max([worst, *(o.ratio for n, f, o in rows if n == 1000 and f == 2)])
    return worst


def _method(model: Published) -> list[str]:
    return [
        f"The test hub holds `{PEER_REPO}`: one {size_text(model.sizes[SHARD])} shard (LFS, through its CDN) "
        "and small files. A seeder hive (default settings) pulls it once, untimed, and its blob is read once "
        "so that the page cache holds it, as it holds the test hub's file.",
        f"Every figure here takes at least {MIN_RUNS} runs, the order rotated each run: a copy's time varies by "
        "about 10% from one run to the next (it is bound by the disk's writes), more than the two copies differ.",
        "**hub copy**: a fresh hive, `POST /v2/downloads {model_ref}`, timed to `complete` on its stream. "
        "**peer copy**: a fresh hive, the same POST with the commit and `sources` naming the seeder for "
        "every blob (what a fleet pull's part says), timed the same way. Both snapshots are checked file by "
        "file against the hub's sha256.",
        "**curl from nginx**: the seeder's blob file served by nginx (`sendfile on`), `curl -o <file>`. "
        "**blob serving**: `curl -o /dev/null` of the seeder's `GET /v2/blobs/{digest}` against the same of "
        "nginx serving the same file (the page cache holds it).",
        "The simulation: `services/queen/pulls/simulate.py` over `plan_pull`'s real tree; its model is in "
        'the README ("Fleet pulls").',
    ]
