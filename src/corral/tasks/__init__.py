"""Durable tasks: every event becomes a row, claimed with a lease, run at least once."""

from corral.tasks.queue import Backoff, ClaimedTask, TaskInfo, TaskQueue

__all__ = ["Backoff", "ClaimedTask", "TaskInfo", "TaskQueue"]
