"""compliance: apis (layout in ../shared/STYLE.md)."""
