"""SQLite state: users, keys, ledger, usage and open reservations."""
