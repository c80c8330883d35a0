"""campaigns: admin (layout in ../shared/STYLE.md)."""
