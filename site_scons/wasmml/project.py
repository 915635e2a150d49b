"""A tree's build policy, which its SConstruct sets in one call:

    env = Environment(tools=[wasmml.tvm_model, wasmml.cargo_wasm])
    wasmml.setup(env)

- one build at a time in the tree (buildlock): two would share
  .sconsign.dblite and the tools' staging files;
- a failure to save SCons's record of the build is one line and exit
  status 2, not a traceback (buildstate);
- the stat-then-content decider (decider): a no-op build does not hash
  tens of MB of weights and modules again;
- $CACHE_DIR, when set, as the shared build cache (SCons's CacheDir): the
  builds are reproducible, so another checkout takes the artifacts from it.

The tools themselves set none of this: it is the tree's, not a builder's.
"""

from wasmml import buildlock, buildstate
from wasmml.decider import stat_then_content


def setup(env):
    """Applies the policy to the tree whose SConstruct made `env`, and to
    `env` (its decider; environments cloned from it after keep it)."""
    import SCons.Script

    buildlock.hold(env.Dir("#").abspath)
    buildstate.guard_saving()
    env.Decider(stat_then_content)
    if env.get("CACHE_DIR"):
        SCons.Script.CacheDir(env.subst("$CACHE_DIR"))
