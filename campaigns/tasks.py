"""campaigns: tasks (layout in ../shared/STYLE.md)."""
