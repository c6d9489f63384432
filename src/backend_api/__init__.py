"""The operators' backend API and web panel: reads from the owners, writes as commands."""
