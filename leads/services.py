"""leads: services (layout in ../shared/STYLE.md)."""
