"""A decider for builds with large artifacts (weights, modules of tens of
MB): a dependency whose modification time and size are what the target saw
when it was built is unchanged; any other is compared by content.

SCons's own "content-timestamp" decider has the same idea but can copy one
target's stored signature into a dependency shared with another target
(SCons issue 2980); this one only reads the target's own record.
"""


def stat_then_content(dependency, target, prev_ni, repo_node=None):
    try:
        if (dependency.get_timestamp() == prev_ni.timestamp
                and dependency.getsize() == prev_ni.size):
            return False
    except AttributeError:  # not a file, or no record from an earlier build
        pass
    return dependency.changed_content(target, prev_ni, repo_node)
