"""`make demo`: the whole system on loopback, offline.

Starts the local test hub (`services/modelserver/hub_cli.py`) with a small multi-file model (two
generated safetensors shards, their index, config.json and tokenizer.json), a queen and two hives
(each a subprocess on a free port; the hives register themselves with the queen), pulls the whole
model through the queen with `rbee-keeper download hf:demo-org/demo-model` so its progress bar shows
in this terminal, checks every file of the hive's snapshot against the hub's sha256, prints a summary
and stops every process it started, also on failure or Ctrl-C.

`__main__.py` is the command (arguments, signals, exit codes), `run.py` the steps in order, `model.py`
the model the hub serves, `checks.py` what is verified at the end, and `procs.py` the child processes.
"""
