"""Billing: accounts and balances, the ledger, debits and refunds, YooKassa payments, weekly bonus."""
