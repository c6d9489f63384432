"""The `imagebot` command: migrations, services, contracts and topology export."""
