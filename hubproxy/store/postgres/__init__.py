"""The store on PostgreSQL, for several hubproxy instances on one database (see `store/sql/`)."""
