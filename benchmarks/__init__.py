"""Benchmarks of the actor (`python -m benchmarks.actor_step`); not part of the installed package."""
