"""Triage: a verdict, as a note, on each action the other agents of its priority add.

It has no schedule and no webhook: Corral calls ``on_activity(activity, changes)``
whenever another agent of its priority (or of one under it) creates or changes an
activity, as a durable task like any other (retried if it fails). Under
``make run``, batched_sync.py mirrors the demo API's best-rated items as actions,
and triage answers each new one with a note: urgent or not, by its score.

The note has a ``key``: adding it again (a retried event, an item synced again)
replaces that note instead of adding another, and a note that does not change
changes nothing and announces nothing. So triage's note reaches batched-sync,
which keeps the verdict without writing an activity, and the exchange ends.
(Agents that did answer each other forever would stop after 8 hops: Corral drops
the events past them and logs both agents' names.)
"""

from corral import ActivityType, Agent

#: The key of the verdict's note (batched_sync.py looks for it).
NOTE_KEY = "triage"
#: A score from which an item is urgent.
URGENT = 99


class Triage(Agent):
    async def on_activity(self, activity, changes):
        if activity.type is not ActivityType.ACTION or activity.done:
            return  # only open actions need a verdict
        score = (activity.meta or {}).get("score")
        if not isinstance(score, int):
            print(f"{activity.title!r}: no score in its meta, nothing to triage by")
            return
        verdict = (
            f"urgent: rated {score}, look at it today"
            if score >= URGENT
            else f"this week: rated {score}"
        )
        await self.tools.plot.add_note(activity.id, verdict, key=NOTE_KEY)
        what = "new" if changes is None else f"changed: {', '.join(changes['fields'])}"
        print(f"{activity.title} ({what}) -> {verdict}")
