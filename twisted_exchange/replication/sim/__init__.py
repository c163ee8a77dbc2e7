"""Deterministic, seeded fault simulator for the replicated exchange.

Modules, bottom-up: ``faulty_storage`` (MemoryStorage whose disk fails on
demand), ``clients`` (honest and poisonous clients), ``checker`` (the
invariants), ``simulation`` (one seeded run), ``__main__`` (the command line)::

    python -m twisted_exchange.replication.sim --seeds 200 [--nodes 3|5] [--seed S] [--steps K]
"""
from twisted_exchange.replication.sim.checker import Checker, Violation
from twisted_exchange.replication.sim.simulation import DEFAULT_STEPS, Outcome, Simulation, simulate

__all__ = ["Checker", "DEFAULT_STEPS", "Outcome", "Simulation", "Violation", "simulate"]
