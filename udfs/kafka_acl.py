"""Who may do what on the project's Kafka when it runs with ``kafka.security = "sasl"``: one
principal per role, and the ACLs of each role as data (:func:`acl_plan`), applied by
``jobs/kafka_security.py`` whenever a topic set is created, so a run's own topics
(``<run>.<field>``) get the same rules as the live ones.

``admin`` is the broker's super user (``super.users``): it creates topics, ACLs and the other
principals' SCRAM credentials, and needs no ACL. Every other principal is denied whatever no
ACL here allows (``allow.everyone.if.no.acl.found=false``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ADMIN", "ROLES", "AclEntry", "acl_plan", "principal"]

Role = Literal["admin", "publisher", "job", "exec-sink", "history-sink", "reader", "operator"]

ADMIN: Role = "admin"
ROLES: tuple[Role, ...] = (
    "admin",
    "publisher",
    "job",
    "exec-sink",
    "history-sink",
    "reader",
    "operator",
)
"""Each role is one principal (``User:<role>``) with its own generated credential."""

ResourceType = Literal["TOPIC", "GROUP", "TRANSACTIONAL_ID"]
Operation = Literal["READ", "WRITE", "DESCRIBE"]


@dataclass(frozen=True, slots=True, order=True)
class AclEntry:
    """One ALLOW rule: ``principal`` may ``operation`` on the ``resource`` named ``name``
    (``pattern`` LITERAL: that exact name, ``*`` being every name of the type)."""

    principal: str
    resource: ResourceType
    name: str
    pattern: Literal["LITERAL", "PREFIXED"]
    operation: Operation


# topic fields of udfs.config.TopicsConfig each role reads / writes (the rest it may not touch)
_READS: dict[Role, tuple[str, ...] | Literal["all"]] = {
    "publisher": (),
    # the kill switch is read, never written by the job: only an operator or the sink trips it
    "job": ("events", "control"),
    "exec-sink": ("events", "orders", "control"),
    "history-sink": "all",
    "reader": "all",
    "operator": "all",
}
_WRITES: dict[Role, tuple[str, ...]] = {
    "publisher": ("events", "dead_letter", "config"),
    "job": (
        "features",
        "dead_letter",
        "stats",
        "quality",
        "signals",
        "orders",
        "drift",
        "config",
    ),
    # executions are the sink's alone; control: its own kill trips
    "exec-sink": ("executions", "risk", "control", "config"),
    "history-sink": ("dead_letter", "config"),
    "reader": (),
    # a person at the desk: sees everything, may trip (or resume) the kill switch, nothing else
    "operator": ("control",),
}
# transactional producers: the Flink job's exactly-once sinks and the execution sink
_TRANSACTIONAL: tuple[Role, ...] = ("job", "exec-sink")


def principal(role: Role) -> str:
    return f"User:{role}"


def acl_plan(topics: dict[str, str]) -> list[AclEntry]:
    """The ALLOW rules of every non-admin role over one topic set (``field -> topic name``,
    :meth:`udfs.config.TopicsConfig.names`), sorted. Consumers may use any group id and the
    transactional producers any transactional id (``*``): a group or a transaction reaches no
    topic that the topic rules do not allow."""
    entries: set[AclEntry] = set()
    for role in ROLES:
        if role == ADMIN:
            continue
        who = principal(role)
        reads = _READS[role]
        read_fields = tuple(topics) if reads == "all" else reads
        for f in read_fields:
            entries.add(AclEntry(who, "TOPIC", topics[f], "LITERAL", "READ"))
        for f in _WRITES[role]:
            entries.add(AclEntry(who, "TOPIC", topics[f], "LITERAL", "WRITE"))
        if read_fields:
            entries.add(AclEntry(who, "GROUP", "*", "LITERAL", "READ"))
        if role in _TRANSACTIONAL:
            entries.add(AclEntry(who, "TRANSACTIONAL_ID", "*", "LITERAL", "WRITE"))
            entries.add(AclEntry(who, "TRANSACTIONAL_ID", "*", "LITERAL", "DESCRIBE"))
    return sorted(entries)
