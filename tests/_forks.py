"""A helper for the test scripts that fork (run in their own interpreter, tests/ on sys.path)."""
import os
import sys
import time


def wait_or_fail(pid, seconds, what):
    """The exit status of child ``pid``; one still running after ``seconds`` (stuck on a lock
    copied held across the fork) is killed and the script exits with ``what``."""
    deadline = time.monotonic() + seconds
    done, status = os.waitpid(pid, os.WNOHANG)
    while not done and time.monotonic() < deadline:
        time.sleep(0.002)
        done, status = os.waitpid(pid, os.WNOHANG)
    if not done:
        os.kill(pid, 9)
        sys.exit(what)
    return status
