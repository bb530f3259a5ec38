"""Scenario 7 (`--only model-memory`): the hive's memory while it pulls a model of many files from the test hub."""

from __future__ import annotations

from contextlib import ExitStack

from bench.context import MIB, Context, size_text
from bench.hf_clients import MAX_WORKERS, hub_env, run_snapshot_download, snapshot_command
from bench.hub_models import SMALL_FILES, Traffic, hive_pull, publish
from bench.procs import RssSampler
from bench.report import Ratio, Section, Target, ratio
from bench.system import module_version
from services.modelserver.published import Published, shard_names

__all__ = ["many_files"]


MANY_REPO = "bench/many-files"

HIVE_RSS_LIMIT_MB = 150.0


def many_files(ctx: Context) -> Section:
    count, base = ctx.sizes.many_files, ctx.sizes.many_file_size
    hub = ctx.hub()
    names = shard_names(count - SMALL_FILES)
    # sizes spread evenly over [base, 2 * base), in a scrambled but fixed order
    shards = {name: base + (i * 7919 % len(names)) * base // len(names) for i, name in enumerate(names)}
    published = publish(ctx, MANY_REPO, shards)
    total = published.size
    section = Section("model-memory", f"7. Hive memory: a model of {len(published.files)} files")
    timeout = 120 + total / (20 * MIB)
    section.method = [
        f"The test hub holds `{MANY_REPO}` at one commit: {len(names)} safetensors shards of {size_text(base)} to "
        f"{size_text(2 * base)} (LFS, through the CDN) and {len(published.files) - len(names)} small files, "
        f"{len(published.files)} files, {total / 1e6:.0f} MB in all.",
        f'A fresh `rbee-hive` per run (default settings); `POST /v2/downloads {{"model_ref": "{published.ref}"}}`, '
        "then the model's stream until its `complete` event; the snapshot is checked file by file (paths and "
        "sha256) and deleted. psutil samples the hive's RSS every 50 ms from before the POST to the end; the "
        "figure is the peak. The idle RSS (after start-up, before the POST) is listed too. MB = 10^6 bytes.",
        f"For comparison (no target): `snapshot_download(max_workers={MAX_WORKERS})` of the same repo in its own "
        "interpreter after each hive run, the call alone, and the call followed by `sync`.",
    ]
    section.commands.append(f'HF_ENDPOINT={hub.url} rbee-hive; POST /v2/downloads {{"model_ref": "{published.ref}"}}')
    m_peak = section.measure("hive peak RSS", "MB")
    m_idle = section.measure("hive idle RSS (before)", "MB")
    m_time = section.measure("hive wall time (POST -> complete)", "s")
    env = hub_env(hub, ctx.workdir / "hf-home-many")
    has_hf = module_version("huggingface_hub") is not None
    m_snap = m_sync = None
    if has_hf:
        m_snap = section.measure("snapshot_download (for comparison)", "s", note="the call alone")
        m_sync = section.measure("snapshot_download, then sync (for comparison)", "s", note="the call alone")
        section.commands.append(snapshot_command(published, env))
    traffic = Traffic(hub)
    for run in range(ctx.runs):
        label = f"run {run + 1}"
        try:
            peak, idle, seconds = _many_run(ctx, f"hive-many-{run + 1}", published, timeout, traffic)
        except Exception as exc:
            section.notes.append(f"{label}: the hive's pull failed: {type(exc).__name__}: {exc}")
            ctx.log(f"  {label}: hive FAILED {exc}")
        else:
            for m, value in ((m_peak, peak), (m_idle, idle), (m_time, seconds)):
                m.runs.append(value)
            ctx.log(f"  {label}: peak RSS {peak:.0f} MB, idle {idle:.0f} MB, {seconds:.2f} s")
        if m_snap is not None and m_sync is not None:
            ctx.quiet()
            try:
                seconds, synced = run_snapshot_download(ctx.workdir / "out" / "hf-many", published, env, timeout)
            except Exception as exc:
                section.notes.append(f"{label}: snapshot_download failed: {type(exc).__name__}: {exc}")
            else:
                m_snap.runs.append(seconds)
                m_sync.runs.append(synced)
            finally:
                ctx.settle()
    section.ratios = [
        Ratio("hive / snapshot_download", ratio(m_time, m_snap), "time ratio, for comparison (no target)"),
        Ratio("hive / (snapshot_download + sync)", ratio(m_time, m_sync), "time ratio (the same durability)"),
    ]
    section.notes += traffic.notes()
    limit = HIVE_RSS_LIMIT_MB
    files = len(published.files)
    section.targets = [Target(f"hive peak RSS < {limit:.0f} MB ({files} files)", m_peak.median, limit, "<", "MB")]
    return section


def _many_run(
    ctx: Context, name: str, model: Published, timeout: float, traffic: Traffic
) -> tuple[float, float, float]:
    """One fresh hive pulls the model: (peak RSS MB, idle RSS MB, seconds)."""
    with ExitStack() as run_stack:
        run_stack.callback(ctx.settle)
        models = ctx.workdir / "models" / name
        hive = ctx.hive("hive-many", env=hub_env(ctx.hub(), ctx.workdir / f"{name}-home"), models_dir=models)
        run_stack.callback(hive.stop)
        sampler = RssSampler(hive.pid, 0.05).start()
        run_stack.callback(sampler.stop)
        ctx.quiet()
        idle = sampler.now()
        traffic.start()
        seconds = hive_pull(hive, models, model, timeout)
        sampler.stop()
        traffic.took("hive")
        return sampler.peak / 1e6, idle / 1e6, seconds
