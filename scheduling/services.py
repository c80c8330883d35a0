"""scheduling: services (layout in ../shared/STYLE.md)."""
