"""Free-text walking preferences turned into edge weights a person can read back."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

# Longer text is cut here; the server rejects longer bodies before they reach the planner.
MAX_PREFERENCE_CHARS = 500

# A liked edge costs length * (1 - LIKE_DISCOUNT * score), so liked ways are at most this
# much cheaper and costs stay positive.
LIKE_DISCOUNT = 0.65

# Each liked group is scored per edge as the max of its edge features (warehouse names).
GROUP_FEATURES: dict[str, tuple[str, ...]] = {
    "green": ("green", "park"),
    "water": ("water",),
    "quiet": ("quiet",),
    "poi": ("poi",),
}

SYNONYMS: dict[str, str] = {
    **dict.fromkeys(
        [
            "park",
            "parks",
            "garden",
            "gardens",
            "green",
            "greenery",
            "nature",
            "tree",
            "trees",
            "forest",
            "forests",
            "wood",
            "woods",
            "woodland",
            "meadow",
            "meadows",
            "countryside",
        ],
        "green",
    ),
    **dict.fromkeys(
        [
            "water",
            "river",
            "rivers",
            "riverside",
            "lake",
            "lakes",
            "lakeside",
            "sea",
            "seaside",
            "coast",
            "coastal",
            "beach",
            "beaches",
            "canal",
            "canals",
            "waterfront",
            "harbour",
            "harbor",
            "pond",
            "ponds",
            "stream",
            "streams",
        ],
        "water",
    ),
    **dict.fromkeys(["quiet", "calm", "peaceful", "residential", "tranquil", "silent"], "quiet"),
    **dict.fromkeys(
        [
            "sight",
            "sights",
            "sightseeing",
            "view",
            "views",
            "viewpoint",
            "viewpoints",
            "landmark",
            "landmarks",
            "monument",
            "monuments",
        ],
        "poi",
    ),
}

NEGATORS = frozenset(
    ["no", "not", "avoid", "avoiding", "without", "dont", "don't", "never", "skip", "less", "fewer"]
)

# Words that name what to avoid once a negator opened a scope ("avoid busy roads").
AVOID_TERMS: dict[str, str] = {
    **dict.fromkeys(
        ["step", "steps", "stair", "stairs", "staircase", "staircases", "stairway"], "steps"
    ),
    **dict.fromkeys(
        [
            "busy",
            "main",
            "road",
            "roads",
            "traffic",
            "highway",
            "highways",
            "car",
            "cars",
            "major",
            "arterial",
        ],
        "busy",
    ),
}

# A negator applies to this many following words ("not on main roads"), and never past the
# end of its clause ("no parks, quiet" still likes quiet ways). Punctuation, a line break
# or a spaced dash ends a clause.
NEGATION_SCOPE = 3

# A conjunction right after an avoided term extends the negation over the next NEGATION_SCOPE
# words, so "no stairs or busy roads" avoids both. After "or" and "nor" a liked word is
# negated too ("no stairs or parks"), but after "and" it starts a new wish and is liked
# ("no stairs and lots of parks").
CONJUNCTIONS = frozenset(["and", "or", "nor"])

STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "nor",
        "with",
        "along",
        "by",
        "near",
        "some",
        "lots",
        "lot",
        "of",
        "to",
        "for",
        "i",
        "me",
        "my",
        "we",
        "like",
        "likes",
        "love",
        "want",
        "wants",
        "would",
        "please",
        "through",
        "in",
        "on",
        "at",
        "via",
        "more",
        "much",
        "prefer",
        "prefers",
        "preferably",
        "walk",
        "walking",
        "walks",
        "route",
        "routes",
        "loop",
        "loops",
        "way",
        "ways",
        "path",
        "paths",
        "street",
        "streets",
        "road",
        "roads",
        "lane",
        "lanes",
        "area",
        "areas",
        "around",
        "mostly",
        "lots",
        "plenty",
        "nice",
        "good",
        "beautiful",
        "pretty",
        "lovely",
        "but",
        "also",
        "as",
        "many",
        "few",
        "if",
        "possible",
    ]
)

# Extra cost factor (cost = length * (1 + penalty)) per avoided kind and highway tag.
AVOID_PENALTIES: dict[str, dict[str, float]] = {
    "steps": {"steps": 4.0},
    "busy": {
        "trunk": 3.0,
        "trunk_link": 3.0,
        "primary": 2.0,
        "primary_link": 2.0,
        "secondary": 1.5,
        "secondary_link": 1.5,
        "tertiary": 0.8,
        "tertiary_link": 0.8,
    },
}

GROUP_LABELS = {"green": "parks", "water": "water", "quiet": "quiet", "poi": "sights"}

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_CLAUSE_END = re.compile(r"[,;:.!?()\n]|\s[-\u2013\u2014]\s")


@dataclass(frozen=True)
class Preference:
    """Parsed preference: liked feature groups, avoided kinds and the words behind them."""

    text: str = ""
    groups: tuple[str, ...] = ()
    avoid: list[str] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Hashable identity of the weights, for caching edge costs per network."""
        return (tuple(sorted(self.groups)), tuple(sorted(self.avoid)))

    @property
    def is_neutral(self) -> bool:
        return not self.groups and not self.avoid

    def describe(self) -> str:
        """Return e.g. "matched: parks, water; avoid: steps; ignored: hills"."""
        parts = [f"matched: {', '.join(self.matched) if self.matched else 'nothing'}"]
        if self.avoid:
            parts.append(f"avoid: {', '.join(self.avoid)}")
        if self.ignored:
            parts.append(f"ignored: {', '.join(self.ignored)}")
        return "; ".join(parts)

    def edge_scores(self, features: np.ndarray, feature_names: tuple[str, ...]) -> np.ndarray:
        """Score each edge in [0, 1] as the best of the liked groups (0 when nothing is liked).

        `features` is an (edges, len(feature_names)) array.
        """
        score = np.zeros(features.shape[0], dtype=np.float32)
        for group in self.groups:
            columns = [feature_names.index(name) for name in GROUP_FEATURES[group]]
            score = np.maximum(score, features[:, columns].max(axis=1))
        return np.clip(score, 0.0, 1.0)

    def highway_penalties(self) -> dict[str, float]:
        """Return the extra cost factor per highway tag for the avoided kinds."""
        penalties: dict[str, float] = {}
        for kind in self.avoid:
            for highway, penalty in AVOID_PENALTIES[kind].items():
                penalties[highway] = max(penalties.get(highway, 0.0), penalty)
        return penalties


def parse_preference(text: str | None) -> Preference:
    """Parse free text such as "parks and water, no stairs" into a Preference.

    Words match whole (so "streets" never matches "trees"); only the first
    MAX_PREFERENCE_CHARS characters are read.
    """
    text = (text or "")[:MAX_PREFERENCE_CHARS]
    # Phone keyboards type a right single quotation mark for the apostrophe ("don’t").
    normalized = text.replace("\u2019", "'")
    # An empty string marks the end of a clause.
    words = [
        word.lower()
        for clause in _CLAUSE_END.split(normalized)
        for word in [*_WORD.findall(clause), ""]
    ]
    groups: list[str] = []
    avoid: list[str] = []
    matched: list[str] = []
    ignored: list[str] = []
    negation_left = 0
    # True right after an avoided term, while further avoided terms and stop words follow.
    after_avoided = False
    # The conjunction that extended the negation, until the next word that is not a stop word.
    conjunction: str | None = None

    for word in words:
        if not word:
            negation_left, after_avoided, conjunction = 0, False, None
            continue
        if word in NEGATORS:
            negation_left, after_avoided, conjunction = NEGATION_SCOPE, False, None
            continue
        if after_avoided:
            if word in AVOID_TERMS:
                # "busy main roads": the rest of the avoided phrase
                _add(avoid, AVOID_TERMS[word])
                continue
            if word in CONJUNCTIONS:
                negation_left, after_avoided, conjunction = NEGATION_SCOPE, False, word
                continue
            if word in STOP_WORDS:
                continue
            after_avoided = False
        if conjunction is not None and word not in STOP_WORDS:
            if conjunction == "and" and word in SYNONYMS:
                negation_left = 0
            conjunction = None
        negated = negation_left > 0
        negation_left = max(negation_left - 1, 0)

        if negated and word in AVOID_TERMS:
            _add(avoid, AVOID_TERMS[word])
            negation_left, after_avoided = 0, True
        elif word in STOP_WORDS:
            continue
        elif word in SYNONYMS and not negated:
            _add(groups, SYNONYMS[word])
            _add(matched, word)
        else:
            # Unknown words, and liked words under a negation, have no weight to give.
            _add(ignored, word)

    return Preference(
        text=text,
        groups=tuple(groups),
        avoid=avoid,
        matched=matched,
        ignored=ignored,
    )


def _add(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)
