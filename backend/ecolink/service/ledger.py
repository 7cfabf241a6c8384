"""The ledger side of an action: checks before it (GPU budget, balance) and the
entries inside its transaction (hold, charge, release).

The posting methods run inside a transaction and keep the cluster's money totals
(`hold_total`, `spent_total`, `released_total`, `last_charge_at`) in step with the
entries they post: the caller writes the cluster in the same transaction.
"""

from __future__ import annotations

from ecocore import billing
from ecocore.billing import ClusterMoney
from ecocore.money import format_usd
from ecocore.status import BUDGETED
from ecolink.catalog import Catalog
from ecolink.errors import Conflict, InsufficientBalance
from ecolink.store import Cluster, Store


def money_of(c: Cluster) -> ClusterMoney:
    return ClusterMoney(c.hold_total, c.released_total, c.spent_total)


def hourly(c: Cluster, replicas: int | None = None) -> int:
    """What `c` costs an hour (with `replicas` instead of its own count, if given)."""
    return billing.hourly_rate(
        c.rate_per_gpu_hour, c.gpu_count, c.replicas if replicas is None else replicas
    )


class Ledger:
    def __init__(self, store: Store, catalog: Catalog) -> None:
        self.store = store
        self.catalog = catalog

    # -- checks --------------------------------------------------------------
    def check_budget(
        self, account_id: str, region: str, gpus_needed: int, exclude: str | None
    ) -> None:
        r = self.catalog.region(region)
        budget = r.gpu_budget if r is not None else 0
        used = self.store.gpus_in_use(account_id, region, BUDGETED, exclude)
        if used + gpus_needed > budget:
            free = max(0, budget - used)
            raise Conflict(
                f"over the GPU budget of region {region}: {gpus_needed} GPUs needed, "
                f"{free} of {budget} free"
            )

    def check_balance(self, account_id: str, needed: int) -> None:
        acct = self.store.account(account_id)
        available = acct.available if acct else 0
        short = billing.missing(available, needed)
        if short > 0:
            raise InsufficientBalance(
                f"insufficient balance: the hold needs ${format_usd(needed)}, "
                f"${format_usd(available)} is available, ${format_usd(short)} missing"
            )

    # -- entries (inside a transaction) ---------------------------------------
    def hold(self, c: Cluster, amount: int, memo: str, at: int) -> None:
        if amount <= 0:
            return
        self.check_balance(c.account_id, amount)
        self.store.post(c.account_id, c.id, "hold", amount, memo, at)
        c.hold_total += amount

    def settle(self, c: Cluster, until: int, at: int) -> None:
        """Post the charge due up to `until` (never past expiry)."""
        until = min(until, c.expires_at)
        due = billing.charge_due(money_of(c), self.store.segments(c.id), until)
        if due > 0:
            self.store.post(c.account_id, c.id, "charge", -due, "usage", at)
            c.spent_total += due
        if until > c.last_charge_at:
            c.last_charge_at = until

    def release(self, c: Cluster, memo: str, at: int) -> None:
        rest = money_of(c).remaining
        if rest > 0:
            self.store.post(c.account_id, c.id, "hold_release", -rest, memo, at)
            c.released_total += rest

    def stop_accruing(self, c: Cluster, until: int, at: int) -> None:
        """Post charges up to `until`, then close the time segment."""
        if self.store.has_open_segment(c.id):
            self.settle(c, until, at)
            self.store.close_segment(c.id, min(until, c.expires_at))

    def start_accruing(self, c: Cluster, at: int, replicas: int | None = None) -> None:
        """Open a time segment at the cluster's hourly rate from `at`."""
        self.store.open_segment(c.id, at, hourly(c, replicas))
