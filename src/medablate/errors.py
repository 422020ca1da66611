"""The one exception type for mistakes a user can fix (bad config, bad data, bad paths).

The CLI prints its message as one paragraph and exits with code 2, without a traceback;
everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, with a message that names the culprit and the fix."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, SLURM preemption, kill): handled like Ctrl-C, so claims are released and every
    file stays whole, but the command exits with 143 as a terminated process does."""


def raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()
