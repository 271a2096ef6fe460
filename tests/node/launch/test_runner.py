"""node/launch/runner.py: a cancel (the coordinator's revoke: SIGTERM to the Celery pool
process) within `cancel_on_sigterm` only sets the task's event — it never ends the process
before the task's final event is sent."""

from __future__ import annotations

import os
import signal

from node.launch.runner import cancel_on_sigterm


def test_a_sigterm_in_the_block_only_sets_cancelled_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with cancel_on_sigterm() as cancelled:
        os.kill(os.getpid(), signal.SIGTERM)  # the default action would end this process
        assert cancelled.wait(5)
    assert signal.getsignal(signal.SIGTERM) == before
