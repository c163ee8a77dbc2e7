"""``python -m twisted_exchange.grape``: same as ``twisted-exchange-grape``."""
from twisted_exchange.grape.cli import main

main()
