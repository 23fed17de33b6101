"""Problems raised by the agent and team use cases (shared by the modules that change agents)."""

from __future__ import annotations

from helpdesk_shared.chassis.problems import Conflict, InvalidInput, NotFound


class AgentNotFound(NotFound):
    slug, title = "agent-not-found", "Agent not found"


class TeamNotFound(InvalidInput):
    """An unknown team named in a request body (422); see `UnknownTeam` for one in the path."""

    slug, title = "team-not-found", "Unknown team"


class UnknownTeam(NotFound):
    slug, title = "team-not-found", "Team not found"


class UnknownAgent(InvalidInput):
    slug, title = "unknown-agent", "Unknown agent"


class InvalidSkillLevels(InvalidInput):
    slug, title = "invalid-skill-levels", "Skill levels for domains the agent does not hold"


class AlreadyExists(Conflict):
    slug, title = "already-exists", "Already exists"
