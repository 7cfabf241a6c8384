"""The local runtime: every replica is a real child process on this machine (see
`runtime` for how its parts fit together)."""

from ecolink.runtime.local.runtime import LocalRuntime

__all__ = ["LocalRuntime"]
