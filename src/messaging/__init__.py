"""Event delivery shared by the services: database plumbing, transactional outbox and relay,
idempotent inbox, broker setup and the consumer that ties them together.

It knows the envelope and the topology from `contracts`, and nothing of any service.
"""
