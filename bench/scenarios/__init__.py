"""The benchmark scenarios, one module each, named as `python -m bench.run --only NAME` names them."""
