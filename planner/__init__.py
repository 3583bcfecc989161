"""Walking-loop planner over compact arrays built from warehouse tables."""

from planner.errors import (
    EmptyRoute,
    InvalidWaypoint,
    NoLoopFound,
    PlannerError,
    RouteFinalized,
    StartNotFound,
)
from planner.interactive import (
    Candidate,
    FinalRoute,
    RouteState,
    add_waypoint,
    finalize,
    start_route,
    suggest_candidates,
)
from planner.loops import Loop, plan_loops
from planner.network import Network
from planner.preferences import Preference, parse_preference
from planner.snap import SnappedStart, snap_start
from planner.walks import Segment

__all__ = [
    "Candidate",
    "EmptyRoute",
    "FinalRoute",
    "InvalidWaypoint",
    "Loop",
    "Network",
    "NoLoopFound",
    "PlannerError",
    "Preference",
    "RouteFinalized",
    "RouteState",
    "Segment",
    "SnappedStart",
    "StartNotFound",
    "add_waypoint",
    "finalize",
    "parse_preference",
    "plan_loops",
    "snap_start",
    "start_route",
    "suggest_candidates",
]
