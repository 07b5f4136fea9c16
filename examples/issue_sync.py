"""A GitHub-style issue sync: a webhook takes `issues` events, the agent keeps each issue.

On activate it creates a webhook that checks GitHub's signature
(``X-Hub-Signature-256``, HMAC-SHA256 of the raw body with a shared secret) before
anything is queued: a forged or altered delivery is answered 401 and never runs.
Each delivery runs ``on_event`` as a durable task (at least once); the agent
stores the issue under its number, and skips a delivery id it has handled
already (GitHub's redeliveries, or a run repeated after a crash).

To point GitHub at it: repository Settings → Webhooks → Add webhook, Payload URL:
the URL it prints (its server must be reachable from GitHub: set
``[server] public_url``), content type ``application/json``, the secret below,
events: Issues.

Under ``make run`` it prints a ``curl`` line that posts a signed ``issues`` event;
paste it into another shell and the worker shows the execution. Paste it twice:
the second answer says ``"duplicate": true`` and nothing runs again.
"""

import hashlib
import hmac
import json

from corral import Agent
from corral.webhooks import GitHubSignature

#: DEMO ONLY: the secret signatures are checked with. It is public (it is in this
#: file), so anyone could sign with it; a real deployment puts the secret it set on
#: GitHub here (deploy a copy of this file with its own secret).
SECRET = "corral-demo-secret"

#: What GitHub posts when an issue is opened, cut down to what the agent reads.
SAMPLE_EVENT = {
    "action": "opened",
    "issue": {
        "number": 42,
        "title": "Webhooks reach the agent",
        "state": "open",
        "user": {"login": "octocat"},
    },
}
#: How long a handled delivery id is remembered (GitHub redelivers for days at most).
SEEN_FOR_MS = 7 * 24 * 3600 * 1000


class IssueSync(Agent):
    limits = {"requests": 50}

    async def activate(self, priority):
        url = await self.tools.network.create_webhook(self.on_event, verify=GitHubSignature(SECRET))
        await self.store.set("webhook_url", url)
        print(f"GitHub webhook: {url} (content type application/json; events: Issues)")
        print(f"try it from another shell: {curl_line(url)}")

    async def on_event(self, request):
        event = request.headers.get("x-github-event", "")
        if event == "ping":
            print("ping: GitHub reached the webhook")
            return
        if event != "issues":
            print(f"ignored a {event or 'untyped'} event")
            return
        seen = f"delivery:{request.delivery_id}"
        if await self.store.has(seen):
            print(f"delivery {request.delivery_id} was handled already: skipped")
            return
        action, issue = request.body["action"], request.body["issue"]
        number = issue["number"]
        await self.store.set_many(
            {
                f"issue:{number}": {
                    "title": issue["title"],
                    "state": issue["state"],
                    "author": issue["user"]["login"],
                    "last_action": action,
                },
                "events": await self.store.get_or_default("events", 0) + 1,
            }
        )
        await self.store.set_with_ttl(seen, True, SEEN_FOR_MS)
        print(f"issue #{number} {action}: {issue['title']!r}")


def signed_sample(secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    """The sample event as GitHub would send it: the body and its headers."""
    body = json.dumps(SAMPLE_EVENT, separators=(",", ":")).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": "demo-delivery-1",
        "X-Hub-Signature-256": f"sha256={signature}",
    }


def curl_line(url: str) -> str:
    """A shell command that posts the signed sample event to ``url``."""
    body, headers = signed_sample()
    flags = " ".join(f"-H '{name}: {value}'" for name, value in headers.items())
    return f"curl -sS -X POST '{url}' {flags} --data-binary '{body.decode()}'"
