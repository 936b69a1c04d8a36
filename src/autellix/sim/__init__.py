"""Simulation: the production scheduling code in virtual time."""
