"""compliance: tasks (layout in ../shared/STYLE.md)."""
