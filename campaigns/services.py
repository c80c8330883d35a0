"""campaigns: services (layout in ../shared/STYLE.md)."""
