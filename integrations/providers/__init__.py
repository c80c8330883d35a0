"""Provider integrations, one folder each (STYLE.md): client.py (HTTP), adapter.py (our records
to theirs through the PHI guard), webhooks.py (their signed events to ours)."""
