"""Customer-support actions for the ``support`` assistant.

``create_ticket`` stands in for a helpdesk API call (Zendesk, Freshdesk, a
Jira service desk...): it validates the request and returns the ticket the
helpdesk would create, with a stable id derived from its content.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Literal

__all__ = ["create_ticket"]

Priority = Literal["low", "normal", "high", "urgent"]


def create_ticket(
    subject: str,
    details: str | None = None,
    priority: Priority = "normal",
    email: str | None = None,
    order_id: int | None = None,
) -> dict[str, object]:
    """Open a support ticket for a customer problem that needs a human.

    Args:
        subject: One line saying what the problem is, e.g. "charger stopped working".
        details: What happened, what the customer already tried, anything useful.
        priority: How urgent it is; "urgent" pages the on-call agent.
        email: The customer's e-mail address, so the agent can reply.
        order_id: The order the problem is about, if any.

    Returns:
        The created ticket: id, status, priority and the expected response time.
    """
    subject = subject.strip()
    if not subject:
        raise ValueError("a ticket needs a subject")
    digest = hashlib.sha256(f"{subject}|{email}|{order_id}".encode()).hexdigest()
    response_hours = {"low": 72, "normal": 24, "high": 8, "urgent": 1}[priority]
    return {
        "ticket_id": f"T-{int(digest[:8], 16) % 100000:05d}",
        "status": "open",
        "subject": subject,
        "priority": priority,
        "order_id": order_id,
        "email": email,
        "details": details or "",
        "created_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "first_response_within_hours": response_hours,
    }
