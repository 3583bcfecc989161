"""Exceptions the planner raises; each subclasses ValueError so callers can map them to 4xx."""

from __future__ import annotations


class PlannerError(ValueError):
    """Base class of every planner error."""


class StartNotFound(PlannerError):
    """No walkable way suitable for a loop lies within reach of the requested start."""


class NoLoopFound(PlannerError):
    """The network around the start cannot give a loop near the target distance."""


class EmptyRoute(NoLoopFound):
    """A step-by-step route was closed before any waypoint was added."""


class InvalidWaypoint(PlannerError):
    """A waypoint was chosen that the last suggestion did not offer."""


class RouteFinalized(PlannerError):
    """The step-by-step route is already closed and accepts no more changes."""
