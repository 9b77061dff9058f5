"""Tests that break things on purpose: leases, unreachable dependencies, crashes, clusters."""
