"""The fleet's model store, the queen's side (README, "The model store").

- `inventory` — pure: which models sit on which hive, and each hive's disk
- `targets` — pure: which hives a delete, pin or unpin goes to, and a valid repository id
- `store` — the inventory kept from every hive's one stream; delete, pin and unpin fanned out
- `presence` — what the fleet holds, put to use: placement by presence, every complete holder a peer source
"""
