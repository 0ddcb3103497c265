"""The unit lane: no servers (see tests/unit/conftest.py)."""
