"""Scenario 6 (`--only model`): a whole model from the test hub, hive vs snapshot_download and `hf download`.

The test hub (services/modelserver/hub.py) runs on this process's threads: the model API, the tree and
the resolves from the hub, LFS blobs by signed, expiring URL from its CDN, bodies sent with sendfile.
Every client pulls the same repo at the same commit into a Hugging Face cache, and every result is
checked file by file (the set of paths, and each file's sha256 against the hub's), so a fast wrong
answer counts as a failure, not as a time.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.context import MIB, Context, Trial, rounds, size_text
from bench.hf_clients import MAX_WORKERS, env_text, environ, hf_cli, hub_env, run_snapshot_download, snapshot_command
from bench.hub_models import Traffic, check_snapshot, hive_pull, publish
from bench.procs import RssSampler, run_checked
from bench.report import Measurement, Ratio, Section, Target, fmt, ratio
from bench.system import module_version
from services.modelserver.published import shard_names

__all__ = ["model"]


MODEL_REPO = "bench/model"

SHARDS = 4


def model(ctx: Context) -> Section:
    shard = ctx.sizes.model_shard
    hub = ctx.hub()
    published = publish(ctx, MODEL_REPO, dict.fromkeys(shard_names(SHARDS), shard))
    total, small = published.size, len(published.files) - SHARDS
    section = Section(
        "model", f"6. A whole model from the test hub: {SHARDS} x {size_text(shard)} shards and {small} files"
    )
    timeout = 120 + total / (20 * MIB)
    out = ctx.workdir / "out"
    section.method = [
        f"The test hub (`services/modelserver/hub.py`, on the harness's threads, bodies sent with sendfile) holds "
        f"`{MODEL_REPO}` at one commit: {SHARDS} safetensors shards of {size_text(shard)} (LFS: the hub's resolve "
        f"answers 302 to a signed, expiring URL on its CDN, a second host) and {small} small files "
        f"(config, tokenizer, index, `.gitattributes`; served by the hub itself), {total / 1e6:.0f} MB in all. "
        "The blobs sit in the page cache, so this measures the clients, not a disk read.",
        "Each run measures every client once, one after the other, in an order rotated each run; `sync` runs "
        "before and after every measurement, each result is deleted after it, and a measurement waits (at most "
        "4 s) for other processes on the machine to go quiet first (see the notes).",
        "Every client asks for `main` and gets a fresh Hugging Face cache; its snapshot directory "
        f"(`models--{MODEL_REPO.replace('/', '--')}/snapshots/<commit>`) must hold exactly the commit's files, "
        "each with the hub's sha256 (checked after the clock stops; a failed check is a failed run).",
        f"hive: a real `rbee-hive` subprocess (default settings, one process for all runs), `HF_ENDPOINT` at the "
        f'hub; wall time from sending `POST /v2/downloads {{"model_ref": "{published.ref}"}}` to receiving the one '
        "`complete` event of the model on `GET /v2/downloads/{id}/stream`, whose `path` must be the snapshot "
        "directory under `HIVE_MODELS_DIR/hub`. The hive fsyncs every file before it is renamed into place. "
        "psutil samples its RSS every 50 ms during the pull.",
        f"snapshot_download: `snapshot_download(repo_id, revision='main', cache_dir=<fresh dir>, "
        f"max_workers={MAX_WORKERS})` in its own interpreter; the figure is the call alone (interpreter start-up "
        "and imports excluded, in its favour). huggingface_hub does not fsync: the same call followed by `sync` "
        "is listed too (the hive's durability).",
        f"hf download: `hf download {MODEL_REPO} --revision main --cache-dir <fresh dir> --max-workers {MAX_WORKERS}`, "
        "timed from spawning the command to its exit (start-up included: that is what a user waits for; `hf "
        "version`, the start-up alone, is listed for reference). `HF_HUB_DISABLE_UPDATE_CHECK=1` keeps it from "
        "asking pypi.org for a newer release first.",
    ]

    hive_models = ctx.workdir / "models" / "hive-model"
    hive = ctx.hive("hive-model", env=hub_env(hub, ctx.workdir / "hive-model-home"), models_dir=hive_models)
    section.commands.append(
        f'HF_ENDPOINT={hub.url} rbee-hive; POST /v2/downloads {{"model_ref": "{published.ref}"}}; '
        "GET /v2/downloads/{id}/stream until `complete`"
    )
    traffic = Traffic(hub)
    trials: list[tuple[Measurement, Trial]] = []
    missing: list[str] = []

    m_hive = section.measure("hive (POST -> complete)", "s")
    m_rss = section.measure("hive peak RSS during the pull", "MB")

    def hive_trial() -> float:
        traffic.start()
        with RssSampler(hive.pid, 0.05) as sampler:
            seconds = hive_pull(hive, hive_models, published, timeout)
        m_rss.runs.append(sampler.peak / 1e6)
        traffic.took("hive")
        return seconds

    trials.append((m_hive, hive_trial))

    m_snap = m_snap_sync = None
    if module_version("huggingface_hub") is None:
        missing.append("snapshot_download and hf download skipped: huggingface_hub is not installed")
    else:
        env = hub_env(hub, ctx.workdir / "hf-home-model")
        m_snap = section.measure("snapshot_download", "s", note="the call alone")
        m_sync = m_snap_sync = section.measure("snapshot_download, then sync", "s", note="the call alone")
        section.commands.append(snapshot_command(published, env))

        def snapshot_trial() -> float:
            traffic.start()
            seconds, synced = run_snapshot_download(out / "hf-snapshot-cache", published, env, timeout + 30)
            traffic.took("snapshot_download")
            m_sync.runs.append(synced)
            return seconds

        trials.append((m_snap, snapshot_trial))

    m_cli = None
    hf, why_no_cli, flags = hf_cli() if module_version("huggingface_hub") else (None, "", [])
    if hf is None and why_no_cli:
        missing.append(f"hf download skipped: {why_no_cli}")
        ctx.log(f"hf download skipped: {why_no_cli}")
    elif hf is not None:
        cli_spec = hub_env(hub, ctx.workdir / "hf-home-cli")
        cli_env = environ(cli_spec)
        m_cli = section.measure("hf download", "s", note="start-up included")
        m_start = section.measure("hf version (the CLI's start-up alone, for reference)", "s")
        argv = [hf, "download", MODEL_REPO, "--revision", "main", "--max-workers", str(MAX_WORKERS), *flags]
        section.commands.append(f"{env_text(cli_spec)} {' '.join(['hf', *argv[1:]])} --cache-dir <fresh dir>")

        def cli_trial() -> float:
            cache = out / "hf-cli-cache"
            ctx.remove(cache)
            traffic.start()
            try:
                t0 = time.perf_counter()
                result = run_checked([*argv, "--cache-dir", str(cache)], timeout + 30, env=cli_env)
                seconds = time.perf_counter() - t0
                traffic.took("hf download")
                check_snapshot(Path(result.stdout.strip().splitlines()[-1]), published)
            finally:
                ctx.remove(cache)
            t0 = time.perf_counter()
            run_checked([hf, "version"], 60, env=cli_env)
            m_start.runs.append(time.perf_counter() - t0)
            return seconds

        trials.append((m_cli, cli_trial))

    ctx.log(
        f"scenario 6: {total / 1e6:.0f} MB in {len(published.files)} files x {len(trials)} clients x {ctx.runs} runs"
    )
    rounds(ctx, section, trials)

    r_snap = ratio(m_hive, m_snap)
    r_cli = ratio(m_hive, m_cli)
    section.ratios = [
        Ratio("hive / snapshot_download", r_snap, "time ratio, lower is better"),
        Ratio("hive / (snapshot_download + sync)", ratio(m_hive, m_snap_sync), "time ratio (the same durability)"),
        Ratio("hive / hf download", r_cli, "time ratio (hf download's start-up included)"),
    ]
    for label, m in (("hive", m_hive), ("snapshot_download", m_snap), ("hf download", m_cli)):
        if m is not None and m.median:
            section.notes.append(f"{label} throughput: {total / m.median / 1e6:.0f} MB/s (median)")
    section.notes += traffic.notes() + missing
    why = "" if m_snap is not None else "huggingface_hub not installed"
    section.targets = [Target("hive <= 0.5x snapshot_download's wall time", r_snap, 0.5, "<=", "x", why)]
    if r_cli is not None:
        section.notes.append(f"Against `hf download` (no target) the hive is at {fmt(r_cli, 'x')}.")
    return section
