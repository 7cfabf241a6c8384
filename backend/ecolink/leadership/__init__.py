"""Which instance does the periodic work (expiry, charges, expiry warnings, reconcile
with the runtime): exactly one, the leader. Every instance answers requests.

Three ways to decide, one interface (`Leadership`):
- `SoleLeader`: the embedded default, one process on SQLite, always the leader;
- `AdvisoryLockLeadership` (`ecolink.leadership.advisory`): a Postgres session-level
  advisory lock held on a connection of its own;
- `LeaseLeadership` (`ecolink.leadership.lease`): a Kubernetes Lease
  (coordination.k8s.io/v1) in the runtime's namespace.

`choice.choose` picks one: the Lease when the runtime is kubernetes with in-cluster
credentials, else the advisory lock when the database is Postgres, else the sole
leader; `serve --leader-election` forces a choice.

A leader that loses its lock or lease steps down at once (`leading` turns false and
the listeners hear it); the service then starts no new round of periodic work. The
money side never depends on there being one leader: every charge and expiry is
computed inside its transaction from what is stored (see `ecolink.service.reaper`),
so two instances that both believe they lead for a moment post nothing twice.
"""

from ecolink.leadership.base import (
    ELECTION_MODES,
    ElectionMode,
    Leadership,
    LeadershipError,
    Listener,
    SoleLeader,
    instance_identity,
)

__all__ = [
    "ELECTION_MODES",
    "ElectionMode",
    "Leadership",
    "LeadershipError",
    "Listener",
    "SoleLeader",
    "instance_identity",
]
