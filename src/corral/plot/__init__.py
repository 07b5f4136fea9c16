"""Priorities, activities, notes, and the routing of activity events (SPEC §1.4).

``service.py``: ``Plot``, the model over the database and the events of a change;
``tools.py``: ``self.tools.plot`` on the host, one execution's view of it;
``rows.py``: rows to values and back, and what an activity weighs. The values
themselves (``Activity``, ``Note``), which the sandbox shares, are
:mod:`corral.activities`.
"""
