"""``python -m twisted_exchange.ctl``: the same as ``exchangectl``."""
from twisted_exchange.ctl.cli import main

main(prog_name="exchangectl")
