"""Closed walking loops of a target length from one start, via two waypoints."""

from __future__ import annotations

import math
from typing import Literal

import msgspec
import numpy as np

from planner import closing
from planner.closing import GOOD_ERROR, Walk
from planner.errors import NoLoopFound
from planner.network import MIN_COST_M, Network
from planner.preferences import Preference, parse_preference
from planner.routing import (
    USED_EDGE_FACTOR,
    cost_matrix,
    edge_costs,
    edge_scores,
    pair_entries,
    path_edges,
    shortest_tree,
    tree_path,
    tree_sums,
)
from planner.snap import snap_start
from planner.walks import (
    Segment,
    edge_jaccard,
    feature_shares,
    walk_coordinates,
    walk_segments,
)

DEFAULT_SEED = 10_000

# Searches run on the part of the network within this share of the target around the start
# (straight line). A loop never leaves the circle of half its length.
LOCAL_RADIUS_SHARE = 0.5

# A loop beyond this relative error of the target is rejected.
MAX_ERROR = 0.25

# Loops returned together share less than this edge Jaccard index.
MAX_JACCARD = 0.5

# Alternatives must come within ALTERNATIVE_ERROR of the target. Where no walk does, the
# best walk is returned alone, because fewer loops beat loops off the target.
ALTERNATIVE_ERROR = 0.05

# Junctions tried as the far end of an out-and-back stem when no loop from the start itself
# comes within ALTERNATIVE_ERROR. At most PIVOT_COUNT of them are tried, within
# PIVOT_MAX_SHARE of the target along the network and PIVOT_SPACING_SHARE apart, and each
# must leave a loop of at least PIVOT_MIN_LOOP_SHARE of the target. Each pivot is searched
# from PIVOT_BEARINGS (degrees added to the seed's bearing) until a loop comes within
# GOOD_ERROR.
PIVOT_COUNT = 8
PIVOT_MAX_SHARE = 0.4
PIVOT_SPACING_SHARE = 0.04
PIVOT_MIN_LOOP_SHARE = 0.2
PIVOT_BEARINGS = (0.0, 180.0, 90.0, 270.0)
# Loop searches from pivots per request, which bounds the time spent on sparse networks.
PIVOT_SEARCHES = 16
# Share of a pivot walk, stem excluded, that may be walked twice.
PIVOT_MAX_RETRACE = 0.1

# Rank penalty per share of a walk's length in its stem, so a loop from the start itself
# comes before a loop at the end of a long stem of about the same length error.
STEM_WEIGHT = 0.5

# Liked edges cost this share less again in loop searches than in the shared edge costs,
# and the liked share of a walk weighs this much more when loops are ranked.
LOOP_LIKE_DISCOUNT = 0.7
EXTRA_PREFERENCE_WEIGHT = 1.0

# With a preference the first bearing turns towards liked ways. BEARING_STEPS bearings are
# scored by the liked share of a disc whose radius is LOOP_RADIUS_SHARE of the target. That
# is target / 2 pi, the radius of a circle with the target as perimeter. Each 180 degrees
# turned away from the seed's bearing costs BEARING_TURN_WEIGHT of the score. Discs with
# less than BEARING_MIN_LENGTH_SHARE of the edge length of the fullest disc are skipped.
LOOP_RADIUS_SHARE = 0.16
BEARING_STEPS = 12
BEARING_TURN_WEIGHT = 0.1
BEARING_MIN_LENGTH_SHARE = 0.5

# Without a preference, walks whose rank lies within RANK_TIE of the best count as equally
# good, and the seed picks which of them comes first. Together with a search that starts at
# the seed's bearing, this makes seeds lead with different loops where a sparse network
# offers few. With a preference the best rank leads, because the rank holds the liked share.
RANK_TIE = 0.1
# A walk counts as equally good only if its share walked twice exceeds the best walk's by
# at most TIE_MAX_EXTRA_RETRACE, and its stem share by at most TIE_MAX_EXTRA_STEM.
TIE_MAX_EXTRA_RETRACE = 0.01
TIE_MAX_EXTRA_STEM = 0.02

# When no loop comes within OUT_AND_BACK_ERROR of the target, the planner walks out and back
# the same way, so the whole walk is stem. A walker would rather walk a loop 10% off the
# target than every street twice. At most OUT_AND_BACK_TRIES turning points are tried.
OUT_AND_BACK_ERROR = 0.10
OUT_AND_BACK_TRIES = 8
# A walk with at least this share on its stem is reported as an out-and-back, and one with
# at least the second share as a loop at the end of a stem.
OUT_AND_BACK_STEM_SHARE = 0.95
STEM_AND_LOOP_STEM_SHARE = 0.2

# Relative spread of the seeded random factor on every edge cost.
COST_NOISE = 0.15

# Edges of earlier alternatives cost this much more, so later loops look elsewhere.
EARLIER_LOOP_FACTOR = 3.0

# The first waypoint A lies this share of the target from the start along the network, and
# the second waypoint B about this many degrees further round (clockwise or not, by seed).
FIRST_LEG_SHARE = 0.3
MAX_FIRST_LEG_SHARE = 0.45
SECOND_WAYPOINT_TURN = 75.0

# First waypoints tried per direction before giving up on it.
FIRST_WAYPOINT_TRIES = 3

# The first waypoint lies at most this share of the network distance to the furthest node
# the start reaches.
REACH_SHARE = 0.7

# Radius, as a share of the target, of the area skipped around a first waypoint from which
# no way on leads back to the start.
POCKET_SHARE = 0.1

# When the best two-waypoint loop is this much too short, loops with more corners are
# tried: legs of this share of the target, turning by the seed's turn after each.
FALLBACK_ERROR = 0.04
POLYGON_LEGS = 5
POLYGON_LEG_SHARE = 0.2
# Weight of the liked share of the way to each polygon corner, against its turn and length
# error. Small networks get most loops from polygon walks, so a preference must move the
# corners too, not only the ways between them.
POLYGON_LIKE_WEIGHT = 2.5


class Loop(msgspec.Struct, frozen=True):
    """A closed walk: coordinates are (lon, lat) with the first point equal to the last."""

    coordinates: list[tuple[float, float]]
    distance_m: float
    node_ids: list[int]
    edge_ids: list[int]
    segments: list[Segment]
    green_share: float
    water_share: float
    quiet_share: float
    retrace_share: float
    snap_distance_m: float
    # Share of the length walked out from the start and back the same way, both directions
    # counted. retrace_share leaves it out, so shape shows how much of the walk is a loop.
    stem_share: float = 0.0
    shape: Literal["loop", "stem_and_loop", "out_and_back"] = "loop"


def loop_shape(stem_share: float) -> Literal["loop", "stem_and_loop", "out_and_back"]:
    """Name a walk by the share of its length on the stem at the start."""
    if stem_share >= OUT_AND_BACK_STEM_SHARE:
        return "out_and_back"
    if stem_share >= STEM_AND_LOOP_STEM_SHARE:
        return "stem_and_loop"
    return "loop"


def plan_loops(
    network: Network,
    lat: float,
    lon: float,
    target_m: float,
    preference: Preference | str | None = None,
    seed: int | None = None,
    alternatives: int = 3,
) -> list[Loop]:
    """Plan up to `alternatives` distinct closed loops of about `target_m` from (lat, lon).

    The same seed gives the same loops; None means DEFAULT_SEED. Raises StartNotFound
    when no usable way is near the start, NoLoopFound when no loop comes within
    MAX_ERROR of the target. Fewer loops than asked are returned when the network has no
    more that differ enough. Where no loop from the start comes within ALTERNATIVE_ERROR,
    a loop may hang at the end of a stem walked out and back. Where no such walk comes
    within it either, the last resort walks out and back the same way.
    """
    if not (math.isfinite(target_m) and target_m > 0):
        raise ValueError(f"target_m must be a positive number of metres, got {target_m!r}")
    if not isinstance(preference, Preference):
        preference = parse_preference(preference)
    alternatives = max(int(alternatives), 1)
    start = snap_start(network, lat, lon, min_component_m=0.5 * target_m)
    rng = np.random.default_rng(DEFAULT_SEED if seed is None else seed)
    whole = network
    network = network.around(start.node, LOCAL_RADIUS_SHARE * target_m)
    search = _LoopSearch(network, preference, network.node_index(start.node_id), target_m)

    tie = RANK_TIE if not preference.groups else 0.0
    first_bearing = float(rng.uniform(0.0, 360.0))
    turn = SECOND_WAYPOINT_TURN * float(rng.choice([-1.0, 1.0]))
    pick = int(rng.integers(1 << 30))
    if preference.groups:
        first_bearing = _liked_bearing(search, first_bearing, turn)
    walks: list[Walk] = []
    # Seeded noise on edge costs makes different seeds take different streets between the
    # same waypoints. Liked edges get less of it, so it does not wash out the preference.
    # Edges of earlier alternatives then cost more.
    noise_rng = np.random.default_rng([DEFAULT_SEED if seed is None else seed, 1])
    noise = noise_rng.uniform(-COST_NOISE, COST_NOISE, size=network.edge_count)
    earlier = 1.0 + noise * (1.0 - edge_scores(network, preference))
    # Extra bearings are tried when an alternative turns out too close to an earlier one or
    # too far off the target.
    offsets = [index * 360.0 / alternatives for index in range(alternatives)]
    offsets += [offset + 180.0 / alternatives for offset in offsets]
    offsets += [offset + 90.0 / alternatives for offset in offsets]
    for offset in offsets:
        if len(_select(walks, target_m, alternatives, tie)) >= alternatives:
            break
        walk = search.find(first_bearing + offset, turn, earlier)
        if walk is None or walk.error(target_m) > MAX_ERROR:
            continue
        if _add_distinct(walks, walk, target_m):
            earlier[walk.edges] *= EARLIER_LOOP_FACTOR

    if _good_count(walks, target_m) == 0:
        for walk in _pivot_walks(search, preference, first_bearing, turn, earlier, alternatives):
            if walk.error(target_m) <= MAX_ERROR:
                _add_distinct(walks, walk, target_m)

    if _good_count(walks, target_m) == 0:
        # Out-and-back walks come first only where no loop comes within OUT_AND_BACK_ERROR
        # (see _select). Otherwise they follow a loop that misses the target by 5-10%.
        # NOTE: they turn only at vertices, up to the parser's MAX_EDGE_M apart, so on a
        # long dead-end track the closest one may miss the target by more than 5%.
        for walk in _out_and_back_walks(search, first_bearing):
            _add_distinct(walks, walk, target_m)
    if not walks:
        # Cheap liked ways can lead the cost tree round the only way of the right length,
        # and a walk up to MAX_ERROR long may turn outside the circle searched so far.
        network = whole.around(start.node, 0.5 * (1.0 + MAX_ERROR) * target_m)
        plain = _LoopSearch(
            network, parse_preference(""), network.node_index(start.node_id), target_m
        )
        for walk in _out_and_back_walks(plain, first_bearing):
            _add_distinct(walks, walk, target_m)

    if not walks:
        raise NoLoopFound(
            f"No loop of about {target_m:.0f} m found from the start: the walkable network "
            "reachable there offers no walk within 25% of that length. Try another distance "
            "or another start."
        )
    walks = _select(walks, target_m, alternatives, tie, pick)
    return [_to_loop(network, walk, start.distance_m) for walk in walks]


def _liked_bearing(search: _LoopSearch, bearing: float, turn: float) -> float:
    """Turn the first bearing towards the side of the start with the most liked ways.

    A loop through waypoints at `bearing` and `bearing + turn` lies roughly in a disc with a
    radius of LOOP_RADIUS_SHARE of the target, centred that far from the start half way
    between the two bearings. The penalty for turning keeps seeds apart where liked ways
    surround the start.
    """
    # NOTE: where liked ways form one long strip (a shore path), loops still come back over
    # streets, because each leg takes the cheapest way and walking the strip twice is retrace.
    network = search.network
    start = search.start
    radius = LOOP_RADIUS_SHARE * search.target
    mid_x = 0.5 * (network.x[network.edge_u] + network.x[network.edge_v]) - network.x[start]
    mid_y = 0.5 * (network.y[network.edge_u] + network.y[network.edge_v]) - network.y[start]
    # Every disc lies within twice its radius of the start.
    near = np.flatnonzero(np.hypot(mid_x, mid_y) <= 2.0 * radius)
    if near.size == 0:
        return bearing
    offsets = np.arange(BEARING_STEPS) * 360.0 / BEARING_STEPS
    offsets = np.where(offsets > 180.0, offsets - 360.0, offsets)
    centres = np.radians(bearing + offsets + 0.5 * turn)
    inside = (
        np.hypot(
            mid_x[near][None, :] - radius * np.sin(centres)[:, None],
            mid_y[near][None, :] - radius * np.cos(centres)[:, None],
        )
        <= radius
    )
    values = search.ctx.values[near]
    length = inside @ values[:, 0]
    liked = inside @ values[:, 1]
    score = liked / np.maximum(length, 1.0) - BEARING_TURN_WEIGHT * np.abs(offsets) / 180.0
    # A disc with few ways (a bare slope) offers few loops that close near the target.
    score[length < BEARING_MIN_LENGTH_SHARE * length.max()] = -np.inf
    return float(bearing + offsets[int(np.argmax(score))])


def _rank(walk: Walk, target: float) -> float:
    """Return the walk's rank with its stem counted against it (lower is better)."""
    return (
        walk.rank(target)
        + STEM_WEIGHT * walk.stem
        - EXTRA_PREFERENCE_WEIGHT * walk.preference_share
    )


def _loop_costs(network: Network, preference: Preference) -> np.ndarray:
    """Return edge costs for loop searches: the shared costs with liked edges cheaper still.

    A loop may wind through any part of the area around the start, so it can follow liked
    ways further than a step-by-step route, which heads for its waypoints.
    """
    key = ("loop_costs", preference.key)
    cached = network.cache.get(key)
    if cached is not None:
        return cached
    costs = edge_costs(network, preference)
    if preference.groups:
        costs = np.maximum(
            costs * (1.0 - LOOP_LIKE_DISCOUNT * edge_scores(network, preference)), MIN_COST_M
        )
    network.cache[key] = costs
    return costs


def _good_count(walks: list[Walk], target: float) -> int:
    return sum(walk.error(target) <= ALTERNATIVE_ERROR for walk in walks)


def _add_distinct(walks: list[Walk], walk: Walk, target: float) -> bool:
    """Add `walk` unless a similar walk ranks better; similar walks that rank worse go.

    The list stays in the order the walks were found, which `_select` relies on.
    """
    similar = [
        index
        for index, other in enumerate(walks)
        if edge_jaccard(walk.edges, other.edges) >= MAX_JACCARD
    ]
    if any(_rank(walks[index], target) <= _rank(walk, target) for index in similar):
        return False
    for index in reversed(similar):
        del walks[index]
    walks.append(walk)
    return True


def _select(
    walks: list[Walk], target: float, alternatives: int, tie: float, pick: int = 0
) -> list[Walk]:
    """Return the first walk and the alternatives that come close enough to it in length.

    The first walk is number `pick` (modulo their count, in the order found) of those ranked
    within `tie` of the best, among the first non-empty of: loops within ALTERNATIVE_ERROR
    of the target, loops within OUT_AND_BACK_ERROR, out-and-back walks within
    ALTERNATIVE_ERROR, all walks. So a liked share or a short stem never puts a loop off the
    target first, and a loop 5-10% off comes before walking every street twice.
    Alternatives lie within ALTERNATIVE_ERROR of the target, out-and-back walks included.
    """
    if not walks:
        return []
    loops = [walk for walk in walks if 2.0 * walk.stem < OUT_AND_BACK_STEM_SHARE]
    pool = (
        [walk for walk in loops if walk.error(target) <= ALTERNATIVE_ERROR]
        or [walk for walk in loops if walk.error(target) <= OUT_AND_BACK_ERROR]
        or [walk for walk in walks if walk.error(target) <= ALTERNATIVE_ERROR]
        or walks
    )
    best = min(pool, key=lambda walk: _rank(walk, target))
    best_rank = _rank(best, target)
    near = [
        walk
        for walk in pool
        if _rank(walk, target) <= best_rank + tie
        and walk.retrace <= best.retrace + TIE_MAX_EXTRA_RETRACE
        and walk.stem <= best.stem + TIE_MAX_EXTRA_STEM
    ]
    first = near[pick % len(near)]
    ranked = sorted(walks, key=lambda walk: _rank(walk, target))
    chosen = [first] + [
        walk for walk in ranked if walk is not first and walk.error(target) <= ALTERNATIVE_ERROR
    ]
    return chosen[:alternatives]


def _two_core(network: Network) -> np.ndarray:
    """Return which nodes lie on the 2-core: on a cycle or on a path between cycles."""
    cached = network.cache.get("two_core")
    if cached is not None:
        return cached
    pattern = (network.csr + network.csr_reverse).tocsr()
    pattern.setdiag(0)
    pattern.eliminate_zeros()
    pattern.data[:] = 1.0
    degree = np.asarray(pattern.sum(axis=1)).ravel()
    alive = np.ones(network.node_count, dtype=bool)
    while True:
        leaves = alive & (degree <= 1)
        if not leaves.any():
            break
        alive[leaves] = False
        degree = degree - pattern @ leaves.astype(np.float64)
    network.cache["two_core"] = alive
    return alive


def _pivots(search: _LoopSearch) -> list[int]:
    """Pick junctions near the start to walk out to and loop from, nearest first.

    Off the 2-core (a start on a dead-end branch) the nearest 2-core node comes first.
    The others are 2-core junctions spread over PIVOT_MAX_SHARE of the target.
    """
    network = search.network
    core = _two_core(network)
    reached = search.start_reached
    real = search.start_real
    degree = np.diff(network.csr.indptr)[reached]
    usable = core[reached] & (reached != search.start) & (real <= PIVOT_MAX_SHARE * search.target)
    pivots: list[int] = []
    if not core[search.start] and usable.any():
        positions = np.flatnonzero(usable)
        pivots.append(int(reached[positions[np.argmin(real[positions])]]))
    positions = np.flatnonzero(usable & (degree >= 3))
    positions = positions[np.argsort(real[positions])]
    spacing = PIVOT_SPACING_SHARE * search.target
    taken: list[float] = []
    for position in positions.tolist():
        if len(pivots) >= PIVOT_COUNT:
            break
        if any(abs(real[position] - other) < spacing for other in taken):
            continue
        node = int(reached[position])
        if node not in pivots:
            pivots.append(node)
            taken.append(float(real[position]))
    return pivots


def _pivot_walks(
    search: _LoopSearch,
    preference: Preference,
    bearing: float,
    turn: float,
    earlier: np.ndarray,
    enough: int,
) -> list[Walk]:
    """Walk out to a junction near the start, loop from there and walk back the same way.

    The out-and-back stem is the common start and end of the walk, so it does not count as
    retraced. This finds loops from dead-end branches and from starts whose own cycles are
    far longer than the target. The search stops once `enough` pivots gave a loop within
    GOOD_ERROR.
    """
    network = search.network
    walks: list[Walk] = []
    good = 0
    searches = 0
    for pivot in _pivots(search):
        if searches >= PIVOT_SEARCHES:
            break
        stem_nodes = tree_path(search.start_tree, pivot)
        stem = path_edges(network, stem_nodes)
        if not _walkable_back(network, stem_nodes):
            continue
        stem_length = float(network.length[stem].sum())
        rest = search.target - 2.0 * stem_length
        if rest < PIVOT_MIN_LOOP_SHARE * search.target:
            continue
        # The stem is walked on top of the inner loop, so a loop shorter than this leaves
        # the whole walk more than MAX_ERROR short of the target.
        inner = _LoopSearch(
            network, preference, pivot, rest, min_length=rest - MAX_ERROR * search.target
        )
        seen: list[list[int]] = []
        for offset in PIVOT_BEARINGS[: PIVOT_SEARCHES - searches]:
            searches += 1
            loop = inner.find(bearing + offset, turn, earlier)
            if loop is None or loop.nodes[0] != pivot or loop.nodes[-1] != pivot:
                continue
            if loop.edges in seen:
                # Around a sparse pivot every bearing finds the same cycle.
                break
            seen.append(loop.edges)
            nodes = stem_nodes + loop.nodes[1:] + stem_nodes[::-1][1:]
            edges = stem + loop.edges + stem[::-1]
            walk = closing.measure(search.ctx, nodes, edges)
            if walk.retrace > PIVOT_MAX_RETRACE:
                continue
            walks.append(walk)
            if walk.error(search.target) <= GOOD_ERROR:
                good += 1
                break
        if good >= enough:
            break
    return walks


def _out_and_back_walks(search: _LoopSearch, bearing: float) -> list[Walk]:
    """Walk out to a turning point about half the target away and back the same way.

    Turning points whose walk lies within ALTERNATIVE_ERROR (else MAX_ERROR) are scored by length error,
    by their angle to `bearing` (so seeds turn in different directions) and by the liked
    share of the way, and the best OUT_AND_BACK_TRIES are built.
    """
    network = search.network
    target = search.target
    # The start's tree reaches about half the target. A turning point may lie up to
    # MAX_ERROR further out, so this tree reaches further.
    _, tree = shortest_tree(
        cost_matrix(network, search.ctx.costs),
        search.start,
        0.5 * (1.0 + MAX_ERROR) * target * search.cost_scale,
    )
    reached = np.flatnonzero(tree >= 0)
    sums = tree_sums(network, tree, reached, search.ctx.values)
    real = sums[:, 0]
    error = np.abs(2.0 * real - target) / target
    candidates = np.flatnonzero(error <= ALTERNATIVE_ERROR)
    if candidates.size == 0:
        # A dead end whose vertices lie far apart may offer no turning point that close,
        # and the closest walk within MAX_ERROR beats none.
        candidates = np.flatnonzero(error <= MAX_ERROR)
    if candidates.size == 0:
        return []
    nodes = reached[candidates]
    angle = closing.angle_between(search.ctx.bearing[nodes], bearing)
    liked = sums[candidates, 1] / np.maximum(real[candidates], 1.0)
    score = error[candidates] / ALTERNATIVE_ERROR + angle / 90.0 - liked
    walks: list[Walk] = []
    for position in np.argsort(score)[:OUT_AND_BACK_TRIES].tolist():
        out = tree_path(tree, int(nodes[position]))
        if not _walkable_back(network, out):
            continue
        edges = path_edges(network, out)
        walks.append(closing.measure(search.ctx, out + out[::-1][1:], edges + edges[::-1]))
    return walks


def _walkable_back(network: Network, nodes: list[int]) -> bool:
    """Tell whether the node path can be walked in reverse (no one-way edge against it)."""
    if len(nodes) < 2:
        return True
    back = np.asarray(nodes[::-1], dtype=np.int64)
    try:
        pair_entries(network.csr, back[:-1], back[1:])
    except ValueError:
        return False
    return True


class _LoopSearch:
    """Shared state of one request: the start's shortest-path tree and edge costs."""

    def __init__(
        self,
        network: Network,
        preference: Preference,
        start: int,
        target: float,
        min_length: float | None = None,
    ):
        self.network = network
        self.start = start
        self.target = target
        # Closings whose longest estimate is shorter than this build no walk, because
        # the caller rejects such walks. None means MAX_ERROR short of the target.
        self.min_length = (1.0 - MAX_ERROR) * target if min_length is None else min_length
        costs = _loop_costs(network, preference)
        self.ctx = closing.context(network, start, costs, edge_scores(network, preference))
        # Search radii in cost units: A lies at most MAX_FIRST_LEG_SHARE * 1.2 of the target
        # away, and each of the two later legs is well under 0.6 of it. Avoided kinds make
        # costs exceed lengths, so the radius grows with them.
        self.cost_scale = 1.5 if preference.avoid else 1.0
        scale = target * self.cost_scale
        self.start_limit = MAX_FIRST_LEG_SHARE * 1.2 * scale
        self.limit = 0.6 * scale

        matrix = cost_matrix(network, costs)
        _, self.start_tree = shortest_tree(matrix, start, self.start_limit)
        self.start_reached = np.flatnonzero(self.start_tree >= 0)
        sums = tree_sums(network, self.start_tree, self.start_reached, self.ctx.values)
        self.start_real = sums[:, 0]
        self.max_real = float(self.start_real.max()) if self.start_real.size else 0.0
        self.start_liked = sums[:, 1]
        self.stem = closing.stem_edges(network, start)
        self.polygon_first = False

    def find(self, bearing: float, turn: float, earlier: np.ndarray) -> Walk | None:
        """Search loops whose first waypoint lies near `bearing`; return the best one.

        Once a polygon walk beat the two-waypoint loops, later calls try it first, because
        the network around the start is then too small for loops with two corners.
        """
        best: Walk | None = None
        if self.polygon_first:
            best = self._polygon(bearing, turn, earlier)
            if best is not None and best.error(self.target) <= GOOD_ERROR:
                return best
        leg_share = FIRST_LEG_SHARE
        # First waypoints in a pocket (a pier, a cul-de-sac estate) have no way on but the way
        # they came, so the area around one where closing failed is skipped on the next try.
        blocked = np.zeros(self.start_reached.shape[0], dtype=bool)
        # Where the reach caps the leg, a later try picks the same first waypoint again,
        # and the same inputs close it the same way, so the result is reused.
        closed: dict[int, tuple[Walk | None, float]] = {}
        for _ in range(FIRST_WAYPOINT_TRIES):
            # In a network smaller than the loop (an old town, a small island) the first
            # waypoint stays inside it, short of its far end.
            distance = min(leg_share * self.target, REACH_SHARE * self.max_real)
            first = self._first_waypoint(bearing, distance, blocked)
            if first is None:
                return best
            if first not in closed:
                closed[first] = self._close_loop(first, bearing + turn, earlier)
            walk, estimate_ratio = closed[first]
            if walk is not None and (
                best is None or walk.rank(self.target) < best.rank(self.target)
            ):
                best = walk
            if best is not None and best.error(self.target) <= GOOD_ERROR:
                return best
            if estimate_ratio == 0.0:
                crow = np.hypot(
                    self.network.x[self.start_reached] - self.network.x[first],
                    self.network.y[self.start_reached] - self.network.y[first],
                )
                blocked |= crow <= POCKET_SHARE * self.target
                continue
            # The reachable loops were all too short or too long: move A out or in.
            leg_share = float(
                np.clip(leg_share / max(estimate_ratio, 0.3), 0.12, MAX_FIRST_LEG_SHARE)
            )
        if self.polygon_first:
            return best
        if best is None or (best.error(self.target) > FALLBACK_ERROR and best.length < self.target):
            walk = self._polygon(bearing, turn, earlier)
            if walk is not None and (
                best is None or walk.rank(self.target) < best.rank(self.target)
            ):
                best = walk
                self.polygon_first = True
        return best

    def _polygon(self, bearing: float, turn: float, earlier: np.ndarray) -> Walk | None:
        """Walk up to POLYGON_LEGS legs, turning each time, and close after each of them.

        Two waypoints give loops about as long as the area's perimeter, so in a small or
        walled-in network (an old town, a peninsula) longer loops need more corners.
        """
        network = self.network
        leg = POLYGON_LEG_SHARE * self.target
        nodes, edges = [self.start], []
        factor = earlier.copy()
        heading = bearing
        best: Walk | None = None
        # Each leg starts from the end of the walk closed after the leg before, under the same
        # factor, so it reuses that closing's tree. That search has a larger limit, so the
        # leg keeps only the nodes within 2 * leg, which its own search would reach.
        distances, tree = shortest_tree(
            cost_matrix(network, self.ctx.costs, factor), self.start, 2.0 * leg
        )
        for leg_index in range(POLYGON_LEGS):
            end = nodes[-1]
            reached = np.flatnonzero((tree >= 0) & (distances <= 2.0 * leg))
            if reached.size == 0:
                break
            sums = tree_sums(network, tree, reached, self.ctx.values)
            real = sums[:, 0]
            liked = sums[:, 1] / np.maximum(real, 1.0)
            dx = network.x[reached] - network.x[end]
            dy = network.y[reached] - network.y[end]
            angle = closing.angle_between(np.degrees(np.arctan2(dx, dy)) % 360.0, heading)
            score = angle / 90.0 + np.abs(real - leg) / leg - POLYGON_LIKE_WEIGHT * liked
            path = tree_path(tree, int(reached[int(np.argmin(score))]))
            path_edge_list = path_edges(network, path)
            nodes = nodes + path[1:]
            edges = edges + path_edge_list
            factor[path_edge_list] *= USED_EDGE_FACTOR
            factor[self.stem] = earlier[self.stem]
            heading += turn
            distances, tree = shortest_tree(
                cost_matrix(network, self.ctx.costs, factor), nodes[-1], self.limit
            )
            walk, ratio = closing.close_walk(
                self.ctx,
                nodes,
                edges,
                self.target,
                factor,
                self.limit,
                None,
                min_length=self.min_length,
                out_tree=tree,
                # A walk too short to come within GOOD_ERROR here leads to another leg, and
                # a longer walk closed after it, except after the last leg.
                short_rounds=1 if leg_index < POLYGON_LEGS - 1 else closing.CORRECTION_ROUNDS,
            )
            if walk is not None and (
                best is None or walk.rank(self.target) < best.rank(self.target)
            ):
                best = walk
            if best is not None and best.error(self.target) <= GOOD_ERROR:
                break
            if ratio >= 1.0:
                break
        return best

    def _first_waypoint(self, bearing: float, distance: float, blocked: np.ndarray) -> int | None:
        nodes = self.start_reached
        real = self.start_real
        angle = closing.angle_between(self.ctx.bearing[nodes], bearing)
        for window in (35.0, 70.0, 180.0):
            ring = (np.abs(real - distance) <= 0.2 * distance) & (angle <= window) & ~blocked
            if ring.any():
                candidates = np.flatnonzero(ring)
                liked = self.start_liked[candidates] / np.maximum(real[candidates], 1.0)
                score = (
                    angle[candidates] / window
                    + np.abs(real[candidates] - distance) / distance
                    - 0.5 * liked
                )
                return int(nodes[candidates[np.argmin(score)]])
        return None

    def _close_loop(
        self, first: int, bearing: float, earlier: np.ndarray
    ) -> tuple[Walk | None, float]:
        """Choose the second waypoint B so that start -> A -> B -> start hits the target.

        Returns the best walk and the ratio of the longest estimate to the target.
        """
        first_path = tree_path(self.start_tree, first)
        first_edges = path_edges(self.network, first_path)
        factor = earlier.copy()
        factor[first_edges] *= USED_EDGE_FACTOR
        # The stem of a dead-end start is the only way back, so it keeps its normal cost.
        factor[self.stem] = earlier[self.stem]
        return closing.close_walk(
            self.ctx,
            first_path,
            first_edges,
            self.target,
            factor,
            self.limit,
            bearing,
            min_length=self.min_length,
        )


def _to_loop(network: Network, walk: Walk, snap_distance_m: float) -> Loop:
    coordinates = walk_coordinates(network, walk.nodes, walk.edges)
    coordinates[-1] = coordinates[0]
    shares = feature_shares(network, walk.edges)
    return Loop(
        coordinates=coordinates,
        distance_m=round(walk.length, 1),
        node_ids=network.node_ids[walk.nodes].tolist(),
        edge_ids=network.edge_ids[walk.edges].tolist(),
        segments=walk_segments(network, walk.edges),
        green_share=round(shares["green"], 4),
        water_share=round(shares["water"], 4),
        quiet_share=round(shares["quiet"], 4),
        retrace_share=round(walk.retrace, 4),
        snap_distance_m=round(snap_distance_m, 1),
        stem_share=round(min(2.0 * walk.stem, 1.0), 4),
        shape=loop_shape(2.0 * walk.stem),
    )
