"""campaigns: selectors (layout in ../shared/STYLE.md)."""
