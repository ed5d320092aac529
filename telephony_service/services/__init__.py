"""Use cases. Each takes its dependencies (session, clock, gateways) as parameters."""
