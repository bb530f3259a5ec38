"""How much of the network the hive takes (README, "Bandwidth").

- `schedule` — HIVE_BANDWIDTH_SCHEDULE: time windows with their own cap, and which is in force when
- `nic` — the room left to other traffic on HIVE_NIC: the controller's math, the counters' readers
- `governor` — the smallest cap in force, set on the hive's token buckets once a tick
"""
