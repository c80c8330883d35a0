import pytest


@pytest.fixture
def writer(key_client):
    """An API client whose key reads and writes contacts (the contacts routes' own scopes)."""
    return key_client(["contacts:read", "contacts:write"])
