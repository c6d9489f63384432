"""Billing: balances and the ledger, debits and refunds, YooKassa top-ups, the weekly bonus."""
