"""The revisions, one per migration of `ecolink.store.schema`."""
