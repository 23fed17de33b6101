"""The pure candidate order: skill tiers (domain + language, domain, anyone), load, then level."""

from __future__ import annotations

import dataclasses
import random
import uuid
from datetime import UTC, datetime, timedelta

import orjson

from routing_service.domain.assignment import (
    Candidate,
    CandidatePool,
    effective_levels,
    order_candidates,
    rank_candidates,
    same_language,
)
from routing_service.repository import _snapshot_candidates

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def candidate(
    load: int = 0,
    capacity: int = 4,
    skills: dict[str, int] | None = None,
    languages: tuple[str, ...] = ("zh",),
    waited: int = 0,
) -> Candidate:
    return Candidate(
        agent_id=uuid.uuid4(),
        active_tickets=load,
        max_concurrent=capacity,
        last_assigned_at=T0 + timedelta(minutes=waited),
        skills=skills or {},
        languages=frozenset(languages),
    )


def test_tiers_come_before_load_and_each_candidate_appears_once() -> None:
    both = candidate(load=3, skills={"車險": 3}, languages=("en",))
    domain_only = candidate(load=2, skills={"車險": 3})
    anyone = candidate(load=0)

    ordered = order_candidates([anyone, domain_only, both], domain="車險", language="en-US")

    assert ordered == [(both, "domain+language"), (domain_only, "domain"), (anyone, "any")]


def test_without_a_language_or_domain_the_tiers_collapse() -> None:
    skilled, other = candidate(load=1, skills={"車險": 3}), candidate(load=0)
    assert [m for _, m in order_candidates([other, skilled], domain="車險", language=None)] == [
        "domain",
        "any",
    ]
    assert order_candidates([skilled, other], domain=None, language="zh") == [
        (other, "any"),
        (skilled, "any"),
    ]


def test_level_breaks_ties_of_load_only() -> None:
    novice = candidate(load=1, skills={"車險": 2}, waited=-10)
    expert = candidate(load=1, skills={"車險": 5})
    idle_novice = candidate(load=0, skills={"車險": 1})
    assert rank_candidates([novice, expert, idle_novice], "車險") == [idle_novice, expert, novice]
    assert rank_candidates([expert, novice], None) == [novice, expert]  # no domain: round robin decides


def test_full_agents_are_never_candidates() -> None:
    assert rank_candidates([candidate(load=4, capacity=4), candidate(load=5, capacity=3)]) == []


def test_languages_match_on_their_primary_subtag() -> None:
    assert (
        same_language("zh", "zh-TW") and same_language("ZH_cn", "zh-Hant-HK") and same_language("en-GB", "en")
    )
    assert not same_language("zh", "en") and not same_language("yue", "zh-HK")


def test_held_domains_get_the_default_level() -> None:
    assert effective_levels(["車險", "壽險"], {"壽險": 5, "stale": 1}) == {"車險": 3, "壽險": 5}


def test_the_pool_answers_each_ticket_with_the_first_of_the_whole_order() -> None:
    """A run's tickets asked one after the other get what `order_candidates` puts first over the
    snapshot with every earlier choice counted (load one higher, last assigned now)."""
    rng = random.Random(20261123)
    domains, languages = ["auto", "home", "life", None], ["zh", "en", "zh-TW", "EN_gb", None]
    asked = 0
    for run in range(400):
        snapshot = [
            candidate(
                load=rng.randint(0, 4),
                capacity=rng.randint(1, 4),
                skills={d: rng.randint(1, 5) for d in rng.sample(domains[:3], rng.randint(0, 2))},
                languages=tuple(rng.sample(["zh", "en", "ja", "zh-Hant", "EN_us"], rng.randint(1, 2))),
                waited=rng.randint(0, 3),  # ties on purpose
            )
            for _ in range(rng.randint(0, 12))
        ]
        pool, expected = CandidatePool(snapshot), {c.agent_id: c for c in snapshot}
        for i in range(rng.randint(1, 30)):
            now = T0 + timedelta(hours=run, seconds=i // 3)  # several choices at the same instant
            domain, language = rng.choice(domains), rng.choice(languages)
            ordered = order_candidates(expected.values(), domain=domain, language=language)
            taken = pool.take(domain=domain, language=language, now=now)
            # The same agent (equal ranks: the earlier in the snapshot, as the stable sort keeps it).
            assert taken == (ordered[0] if ordered else None), (run, i)
            if taken is not None:
                chosen = taken[0]
                expected[chosen.agent_id] = dataclasses.replace(
                    chosen, active_tickets=chosen.active_tickets + 1, last_assigned_at=now
                )
            asked += 1
    assert asked > 4000


def test_snapshot_candidates_are_built_from_their_rows_and_reused_while_unchanged() -> None:
    agent, team = uuid.uuid4(), uuid.uuid4()
    row = {
        "id": agent,
        "active_tickets": 2,
        "max_concurrent": 5,
        "last_assigned_epoch": T0.timestamp(),
        "profile": orjson.dumps([["車險", "壽險"], {"壽險": 5, "stale": 1}, ["zh", "en"]]).decode(),
        "team_id": team,
    }
    first = _snapshot_candidates([row])
    skills, languages = {"車險": 3, "壽險": 5}, frozenset({"zh", "en"})
    assert first == [Candidate(agent, 2, 5, T0, skills=skills, languages=languages, team_id=team)]
    assert _snapshot_candidates([dict(row)])[0] is first[0]  # unchanged: the same candidate
    later = T0 + timedelta(seconds=1, microseconds=123_457)  # back from epoch seconds to the µs
    busier = _snapshot_candidates([row | {"active_tickets": 3, "last_assigned_epoch": later.timestamp()}])
    assert busier[0].active_tickets == 3 and busier[0].last_assigned_at == later
    never = _snapshot_candidates([row | {"last_assigned_epoch": None}])
    assert never[0].last_assigned_at is None
    regraded = _snapshot_candidates([row | {"profile": '[["車險"], null, ["zh"]]'}])
    assert regraded[0].skills == {"車險": 3} and regraded[0].languages == frozenset({"zh"})
