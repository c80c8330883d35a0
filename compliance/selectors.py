"""compliance: selectors (layout in ../shared/STYLE.md)."""
