"""Reliability and security tests: nothing lost, torn, leaked or let in."""
