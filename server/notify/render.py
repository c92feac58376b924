"""Webhook bodies and headers: the generic JSON payload, Slack and Discord text, the HMAC signature.

Receivers verify a signed body by recomputing HMAC-SHA256 over the raw bytes they received with the
shared secret and comparing it, in constant time, to the hex digest in `X-Ganscope-Signature`
(`sha256=<hex>`); the body carries its own `time`, so a receiver can also refuse old replays.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import urlsplit

import orjson

from ganscope.trainer.config import parse_notify_target

SIGNATURE_HEADER = "X-Ganscope-Signature"
DISCORD_LIMIT = 2000  # characters of a Discord message
_DISCORD_HOSTS = {"discord.com", "discordapp.com", "canary.discord.com", "ptb.discord.com"}


def target_format(target: str, default: str = "auto") -> tuple[str, str]:
    """(format, url): an explicit `slack+`/`discord+`/`json+` prefix wins, then `default` unless it is
    "auto", then the host: Slack's and Discord's webhook hosts get their text format, others JSON."""
    fmt, url = parse_notify_target(target)
    if fmt:
        return fmt, url
    if default != "auto":
        return default, url
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host == "hooks.slack.com":
        return "slack", url
    if host in _DISCORD_HOSTS and parts.path.startswith("/api/webhooks/"):
        return "discord", url
    return "json", url


def redact(url: str) -> str:
    """scheme://host[:port]/… and a fingerprint: a chat webhook's path is its password, never shown."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if parts.port:
        host = f"{host}:{parts.port}"
    tail = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{tail} #{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def summary_line(payload: dict[str, Any]) -> str:
    """One human sentence for the event (also the generic payload's `text`)."""
    event, run, alert = payload["event"], payload.get("run"), payload.get("alert")
    who = f"run {run['id']} “{run['name']}”" if run and run.get("name") else (f"run {run['id']}" if run else "")
    if event == "alert.opened" and alert:
        line = (f"{alert['severity'].upper()}: {alert['signature']} on {who} at step {alert['last_step']}: "
                f"{alert['message']}")
        if run and run.get("control") == "stop":
            line = line.rstrip(". ") + ". The run is being stopped (on_failure: stop)."
        return line
    if event == "alert.escalated" and alert:
        return (f"FAILING (was {alert.get('previous_severity') or 'warning'}): {alert['signature']} on {who} at "
                f"step {alert['last_step']}: {alert['message']}")
    if event == "run.healed" and run and run.get("heal"):
        h = run["heal"]
        changes = ", ".join(f"{c['knob']} {c.get('from')!r} → {c.get('to')!r}" for c in h.get("changes") or [])
        return (f"HEALED: {who}: {h.get('signature')} since step {h.get('onset_step')}; rolled back from step "
                f"{h.get('from_step')} to {h.get('rollback_step')} and changed {changes or 'nothing'}.")
    if event.startswith("run.") and run:
        status = event.split(".", 1)[1]
        line = f"{who} {status} at step {run['step']} of {run['total_steps']}"
        why = run.get("stop_reason") if status == "stopped" else run.get("error") if status == "failed" else None
        return f"{line}: {why}" if why else f"{line}."
    if event == "test":
        return "ganscope test notification: this webhook is configured correctly."
    return f"{event} on {who}" if who else event


def _slack_escape(text: str) -> str:
    # Slack's three control characters; escaping them also keeps a run name from writing <!channel>.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def body(fmt: str, payload: dict[str, Any]) -> bytes:
    """The bytes POSTed to a target of format json | slack | discord."""
    run = payload.get("run") or {}
    url = run.get("url")
    if fmt == "slack":
        text = "*ganscope* · " + _slack_escape(payload["text"])
        if url:
            text += f"\n<{url}|Open run {run['id']}>"
        return orjson.dumps({"text": text})
    if fmt == "discord":
        text = "**ganscope** · " + payload["text"]
        tail = f"\n{url}" if url else ""
        if len(text) + len(tail) > DISCORD_LIMIT:
            text = text[:DISCORD_LIMIT - len(tail) - 1] + "…"
        # No @everyone / @here / role pings from a run's name or an alert's message.
        return orjson.dumps({"content": text + tail, "allowed_mentions": {"parse": []}})
    return orjson.dumps(payload)


def sign(secret: str, data: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def verify(secret: str, data: bytes, header: str) -> bool:
    """What a receiver does (docs/notifications.md shows the same in a few lines)."""
    return hmac.compare_digest(sign(secret, data), header or "")
