"""`Store`: every table of the database behind one object, and the ledger audit."""

from __future__ import annotations

from ecocore.billing import apply_posting
from ecolink.store.accounts import AccountsTable
from ecolink.store.clusters import ClustersTable
from ecolink.store.console import ConsoleSessionsTable
from ecolink.store.events import EventsTable
from ecolink.store.idempotency import IdempotencyTable
from ecolink.store.instances import InstancesTable
from ecolink.store.kept import KeptSessionsTable
from ecolink.store.ledger import LedgerTable


class Store(
    ConsoleSessionsTable,
    AccountsTable,
    ClustersTable,
    LedgerTable,
    EventsTable,
    IdempotencyTable,
    KeptSessionsTable,
    InstancesTable,
):
    """The SQLite database of one state directory.

    One `Database` (one write connection, one `tx()`, the writer thread and the
    readers) shared by the table classes it is made of, so one transaction can
    span tables: a cluster's hold, its segment and its event commit together."""

    def audit(self) -> list[str]:
        """Check the ledger's invariants; returns the problems found (empty: none)."""
        problems: list[str] = []
        for acct in self.accounts():
            bal = held = 0
            for e in self.ledger_all(acct.id):
                bal, held = apply_posting(bal, held, e.kind, e.amount)
                if (bal, held) != (e.balance_after, e.held_after):
                    problems.append(f"ledger entry {e.id}: running totals do not match")
                if bal - held < 0:
                    problems.append(f"ledger entry {e.id}: available below zero")
            if (bal, held) != (acct.balance, acct.held):
                problems.append(f"account {acct.name}: totals differ from the ledger sums")
        by_id = self.cluster_ledger_sums()
        for c in self.list_clusters(None):
            hold, released, spent = by_id.get(c.id, (0, 0, 0))
            if (hold, released, spent) != (c.hold_total, c.released_total, c.spent_total):
                problems.append(f"cluster {c.id}: totals differ from the ledger")
            if spent > hold:
                problems.append(f"cluster {c.id}: spent more than held")
            if c.status in ("stopped", "terminated", "failed") and hold - released - spent != 0:
                problems.append(f"cluster {c.id}: {c.status} but still holds money")
            if (
                c.status in ("pending", "running")
                and not c.suspended
                and not self.has_open_segment(c.id)
            ):
                problems.append(f"cluster {c.id}: accrues but has no open time segment")
            if c.status not in ("pending", "running") and self.has_open_segment(c.id):
                problems.append(f"cluster {c.id}: {c.status} but has an open time segment")
        return problems
