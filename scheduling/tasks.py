"""scheduling: tasks (layout in ../shared/STYLE.md)."""
