"""A waSCC host in Python: runs a signed waPC actor behind `wascc:http_server`.

    PYTHONPATH=site_scons python -m wascc.host ACTOR.wasm [--port 8081] ...

`wapc` runs actor instances on wasmtime (imports, bounds checks, time and
memory limits); `server` turns HTTP requests into `HandleRequest` calls on a
pool of them; `__main__` verifies the actor's signature before anything runs.
The contract it follows: docs/design.md, "The waSCC actor and its host".
"""
from .server import Busy, Pool, Server, parse_response
from .wapc import (Actor, ActorError, GuestError, Instance, ModuleError, OutOfMemory, TimedOut,
                   Trapped)

__all__ = ["Actor", "ActorError", "Busy", "GuestError", "Instance", "ModuleError", "OutOfMemory",
           "Pool", "Server", "TimedOut", "Trapped", "parse_response"]
