"""Sandboxes for the outside world (Telegram, YooKassa, model weights) and the whole system
running against them: what the demo, the end-to-end tests, the benchmark and the fault suite use.
"""
