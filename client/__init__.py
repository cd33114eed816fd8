"""The progressd worker SDK: report a task's steps over HTTP, cooperatively paused, resumed and cancelled.

    tracker = Tracker.create("Cellphone Store CRM", steps=["Create database tables", "Generate UI"])
    with tracker.step(1) as step:   # starts the step; completes it on exit, fails it on an exception
        step.progress(40)
        tracker.check()             # waits while the task is paused; raises Cancelled once it is cancelled

Imports only the standard library and httpx: nothing of the server.
"""

from client.aio import AsyncStep, AsyncTracker
from client.core import Options
from client.errors import Cancelled, Interrupted, Paused, ProgressdError, Rejected, Unavailable
from client.retry import RetryPolicy, Stats
from client.tracker import Step, Tracker

__all__ = [
    "AsyncStep",
    "AsyncTracker",
    "Cancelled",
    "Interrupted",
    "Options",
    "Paused",
    "ProgressdError",
    "Rejected",
    "RetryPolicy",
    "Stats",
    "Step",
    "Tracker",
    "Unavailable",
]
