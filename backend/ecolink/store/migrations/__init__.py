"""The Alembic environment of the store's schema (see `ecolink.store.migrate`)."""
