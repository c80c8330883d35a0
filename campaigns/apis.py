"""campaigns: apis (layout in ../shared/STYLE.md)."""
