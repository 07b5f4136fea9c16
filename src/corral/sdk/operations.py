"""The name of every tool operation an agent can ask the host for, defined once.

The SDK sends these names from inside the sandbox; the host's dispatch tables
(``corral.runtime.tools``, and ``run.inline`` in ``corral.sandbox.process``) are
keyed by them. One list on both sides means a new operation cannot be sent under
one spelling and answered under another, and the test suite can list them all
(``tests/test_operations.py`` fails on any that no test exercises).

This module is imported inside the sandbox: it must not import host code.
"""

from __future__ import annotations

import enum


class Op(enum.StrEnum):
    """A tool operation; on the wire, its value (``docs/sandbox-rpc.md``)."""

    # The store (SPEC §1.1): values cross encoded, so the encoded forms are the operations.
    # The host runs each as the ``corral.state.Store`` method after the dot.
    STORE_GET = "store.get_encoded"
    STORE_GET_MANY = "store.get_many_encoded"
    STORE_HAS = "store.has"
    STORE_KEYS = "store.keys"
    STORE_LIST_ENTRIES = "store.list_entries_encoded"
    STORE_SET = "store.set_encoded"
    STORE_SET_WITH_TTL = "store.set_with_ttl_encoded"
    STORE_SET_MANY = "store.set_many_encoded"
    STORE_DELETE = "store.delete"
    STORE_CLEAR_MANY = "store.clear_many"
    STORE_CLEAR_ALL = "store.clear_all"
    STORE_ACQUIRE_LOCK = "store.acquire_lock"
    STORE_RELEASE_LOCK = "store.release_lock"

    # The network (SPEC §1.3).
    FETCH = "network.fetch"
    #: ``self.tools.network``: a webhook of this instance, made, deleted, listed.
    WEBHOOK_CREATE = "network.create_webhook"
    WEBHOOK_DELETE = "network.delete_webhook"
    WEBHOOK_LIST = "network.list_webhooks"

    # The plot tool (SPEC §1.4): activities and notes in the instance's priority.
    PLOT_CREATE = "plot.create_activity"
    PLOT_CREATE_MANY = "plot.create_activities"
    PLOT_UPDATE = "plot.update_activity"
    PLOT_GET = "plot.get_activity"
    PLOT_GET_BY_SOURCE = "plot.get_activity_by_source"
    PLOT_FIND = "plot.find_activities"
    PLOT_ADD_NOTE = "plot.add_note"

    # Callbacks and tasks (SPEC §1.2).
    CALLBACK_CREATE = "callbacks.create"
    #: What ``run(token)`` sends to learn the callback's method and arguments.
    CALLBACK_GET = "callbacks.get"
    CALLBACK_DELETE = "callbacks.delete"
    CALLBACK_DELETE_ALL = "callbacks.delete_all"
    #: What ``run(self.method)`` sends: no work, but SPEC §1.6 counts every ``run`` as a
    #: request and only the host's count is recorded, so the host answers it itself.
    RUN_INLINE = "run.inline"
    TASK_RUN = "tasks.run_task"
    TASK_SCHEDULE = "tasks.schedule"
    TASK_SCHEDULE_RECURRING = "tasks.schedule_recurring"
    TASK_CANCEL = "tasks.cancel"
    TASK_CANCEL_ALL = "tasks.cancel_all"
    TASK_CANCEL_SCHEDULED = "tasks.cancel_scheduled"
