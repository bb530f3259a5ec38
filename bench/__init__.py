"""`make bench`: the hive against curl, aria2c and hf_hub_download, the SSE relay, memory.

Entry point: ``python -m bench.run [--quick] [--only NAME] [--runs N] [--out FILE]``; writes BENCHMARKS.md.
Everything runs on 127.0.0.1 with free ports; every process it starts is stopped by PID at the end.
"""
