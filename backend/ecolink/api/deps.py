"""Typed dependencies of the HTTP routes: `Ctx`, `CurrentAccount` and `OwnedCluster`.

FastAPI resolves a route's dependencies in the order they are declared, so a route
that names `OwnedCluster` before reading its query or body answers 404 for another
account's cluster before any 422 (api.md's order of checks). They are `async`: the
store read runs in a reader thread of the store (`ClusterStreams`), awaited here."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from ecolink.api.context import AppContext, get_ctx
from ecolink.errors import Unauthenticated
from ecolink.store import Account, Cluster


async def _ctx(request: Request) -> AppContext:
    return get_ctx(request)


async def _account(request: Request) -> Account:
    """The account the auth middleware found for this request."""
    acct = getattr(request.state, "account", None)
    if not isinstance(acct, Account):
        raise Unauthenticated("missing, wrong or revoked credentials")
    return acct


Ctx = Annotated[AppContext, Depends(_ctx)]
CurrentAccount = Annotated[Account, Depends(_account)]


async def _owned_cluster(ctx: Ctx, account: CurrentAccount, id: str) -> Cluster:
    """The caller's cluster named by the path's `id` (its id or name); 404 otherwise."""
    return await ctx.streams.cluster(account.id, id)


OwnedCluster = Annotated[Cluster, Depends(_owned_cluster)]
