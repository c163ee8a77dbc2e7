"""``make bench-peers``: our core side by side with order books from PyPI.

Bottom-up: :mod:`.workload` (the seeded neutral command stream),
:mod:`.engines` (one adapter per engine, and the child process that times
one engine on one workload), :mod:`.bench` (the virtual environment of the
peer engines, the interleaved rounds and the table).
"""
