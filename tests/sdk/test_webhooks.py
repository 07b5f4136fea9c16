"""The webhook verifiers against the schemes' real, published test vectors.

A verifier is only right if it accepts what the real sender signs: each scheme's
tests start from a signature the sender's documentation publishes (Stripe
publishes none: its vector is built from its documented scheme and checked
against an HMAC computed outside Python), then take it apart one piece at a time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any

import pytest

from corral.errors import WebhookVerificationError
from corral.sdk.webhooks import (
    GitHubSignature,
    StandardWebhooks,
    StripeSignature,
    WebhookRequest,
    WebhookVerifier,
    request_wire,
    verifier_from_spec,
)


def request(body: bytes, headers: dict[str, str]) -> WebhookRequest:
    return WebhookRequest.from_wire(
        request_wire(
            method="POST",
            headers=list(headers.items()),
            query="",
            body=body,
            delivery_id="dl_test",
            received_at_ms=0,
        )
    )


def refused(verifier: WebhookVerifier, req: WebhookRequest, now: float | None = None) -> str:
    """The message of the refusal, checked to give nothing of the secret away."""
    with pytest.raises(WebhookVerificationError) as caught:
        verifier.verify(req, now=now)
    message = str(caught.value)
    for secret in SECRETS:
        assert secret not in message
    return message


# -- Standard Webhooks ------------------------------------------------------------------

# The specification's own test vector (standard-webhooks, and Svix's libraries).
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TS = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

# GitHub's "Validating webhook deliveries" test values.
GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

# Stripe publishes no fixed vector; this one follows its documented scheme, and its
# digest was computed with `openssl dgst -sha256 -hmac` over "1700000000.<body>".
ST_SECRET = "whsec_test_secret_for_corral"
ST_TS = 1700000000
ST_BODY = b'{"id": "evt_1", "type": "payment_intent.succeeded"}'
ST_DIGEST = "51d75f2bf51a06aca5882e51b24efc5ebd2a790a51f2b42dec22ccdf03993e00"

SECRETS = [SW_SECRET, SW_SECRET.removeprefix("whsec_"), GH_SECRET, ST_SECRET]


def sw_request(
    body: bytes = SW_BODY, *, signature: str = SW_SIGNATURE, **changes: str
) -> WebhookRequest:
    headers = {
        "webhook-id": SW_ID,
        "webhook-timestamp": str(SW_TS),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return request(body, headers | {k.replace("_", "-"): v for k, v in changes.items()})


@pytest.mark.parametrize(
    "secret",
    [SW_SECRET, SW_SECRET.removeprefix("whsec_"), base64.b64decode(SW_SECRET[6:])],
    ids=["whsec", "bare base64", "raw bytes"],
)
def test_standard_webhooks_accepts_the_specs_vector(secret: str | bytes) -> None:
    verifier = StandardWebhooks(secret)
    verifier.verify(sw_request(), now=SW_TS)
    assert verifier.sign(SW_ID, SW_TS, SW_BODY) == SW_SIGNATURE


def test_standard_webhooks_headers_are_case_insensitive() -> None:
    req = request(
        SW_BODY,
        {"Webhook-Id": SW_ID, "WEBHOOK-TIMESTAMP": str(SW_TS), "Webhook-Signature": SW_SIGNATURE},
    )
    StandardWebhooks(SW_SECRET).verify(req, now=SW_TS)


def test_standard_webhooks_any_of_several_signatures_passes_for_key_rotation() -> None:
    verifier = StandardWebhooks(SW_SECRET)
    old = StandardWebhooks(b"the previous key").sign(SW_ID, SW_TS, SW_BODY)
    for header in [
        f"{old} {SW_SIGNATURE}",
        f"{SW_SIGNATURE} {old}",
        f"v1a,c29tZSBhc3ltbWV0cmljIG9uZQ== {SW_SIGNATURE}",  # other versions are skipped
        f"v1,not*base64 {SW_SIGNATURE}",
    ]:
        verifier.verify(sw_request(signature=header), now=SW_TS)
    assert "no signature in the webhook-signature header matches" in refused(
        verifier, sw_request(signature=f"{old} {old}"), now=SW_TS
    )


@pytest.mark.parametrize(
    "body",
    [b'{"test": 2432232315}', b'{"test":2432232314}', SW_BODY + b"\n", b" " + SW_BODY],
    ids=["one digit", "a space less", "a trailing newline", "a leading space"],
)
def test_standard_webhooks_refuses_a_changed_body(body: bytes) -> None:
    message = refused(StandardWebhooks(SW_SECRET), sw_request(body), now=SW_TS)
    assert message == (
        "no signature in the webhook-signature header matches: the body, webhook-id or "
        "webhook-timestamp was changed, or the webhook's secret is not the sender's"
    )


def test_standard_webhooks_refuses_a_changed_id_or_wrong_secret() -> None:
    verifier = StandardWebhooks(SW_SECRET)
    assert "matches" in refused(verifier, sw_request(webhook_id="msg_other"), now=SW_TS)
    other = StandardWebhooks("whsec_" + base64.b64encode(b"another key").decode())
    assert "matches" in refused(other, sw_request(), now=SW_TS)


def test_standard_webhooks_allows_five_minutes_either_way_and_no_more() -> None:
    verifier = StandardWebhooks(SW_SECRET)
    verifier.verify(sw_request(), now=SW_TS + 300)
    verifier.verify(sw_request(), now=SW_TS - 300)
    assert refused(verifier, sw_request(), now=SW_TS + 301) == (
        "the signature is too old: its webhook-timestamp is 301 s ago, more than the 300 s "
        "allowed (a replayed request, or a clock that is wrong)"
    )
    assert refused(verifier, sw_request(), now=SW_TS - 3600) == (
        "the signature's time is in the future: its webhook-timestamp is 3600 s ahead, more "
        "than the 300 s allowed (the sender's clock or this one is wrong)"
    )


def test_standard_webhooks_checks_against_the_clock_by_default() -> None:
    # The vector was signed in 2021: with no `now`, it is long stale.
    assert "too old" in refused(StandardWebhooks(SW_SECRET), sw_request())


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_standard_webhooks_names_a_missing_header(missing: str) -> None:
    req = sw_request()
    headers = {k: v for k, v in req.headers.pairs if k != missing}
    assert refused(StandardWebhooks(SW_SECRET), request(SW_BODY, headers), now=SW_TS) == (
        f"the request has no {missing} header, which Standard Webhooks signatures need"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"webhook_timestamp": "1614265330.0"},
            "the webhook-timestamp header is not a Unix time in seconds: '1614265330.0'",
        ),
        (
            {"webhook_timestamp": "-5"},
            "the webhook-timestamp header is not a Unix time in seconds: '-5'",
        ),
        ({"webhook_timestamp": ""}, "the webhook-timestamp header is not a Unix time"),
        (
            {"signature": SW_SIGNATURE.removeprefix("v1,")},
            "the webhook-signature header holds no v1 signature (expected space-separated "
            "entries like v1,<base64>)",
        ),
        ({"signature": "   "}, "the webhook-signature header holds no v1 signature"),
    ],
)
def test_standard_webhooks_refuses_malformed_headers(changes: dict[str, str], message: str) -> None:
    assert message in refused(StandardWebhooks(SW_SECRET), sw_request(**changes), now=SW_TS)


def test_standard_webhooks_signs_non_utf8_and_whitespace_bodies_byte_exact() -> None:
    verifier = StandardWebhooks(SW_SECRET)
    body = b"\xff\xfe\x00 not text \r\n\t "
    signature = verifier.sign(SW_ID, SW_TS, body)
    # Checked independently of the verifier: the scheme's HMAC over the exact bytes.
    key = base64.b64decode(SW_SECRET.removeprefix("whsec_"))
    content = f"{SW_ID}.{SW_TS}.".encode() + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    assert signature == f"v1,{expected}"
    binary = "application/octet-stream"
    req = sw_request(body, signature=signature, content_type=binary)
    assert req.body == body  # not UTF-8: the handler sees bytes, the verifier the same bytes
    verifier.verify(req, now=SW_TS)
    stripped = sw_request(body.strip(), signature=signature, content_type=binary)
    assert "matches" in refused(verifier, stripped, now=SW_TS)


# -- GitHub -----------------------------------------------------------------------------


def gh_request(body: bytes = GH_BODY, signature: str | None = GH_SIGNATURE) -> WebhookRequest:
    headers = {"X-GitHub-Event": "ping", "Content-Type": "text/plain"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return request(body, headers)


def test_github_accepts_the_documented_vector() -> None:
    verifier = GitHubSignature(GH_SECRET)
    verifier.verify(gh_request())
    assert verifier.sign(GH_BODY) == GH_SIGNATURE
    GitHubSignature(GH_SECRET.encode()).verify(gh_request())
    GitHubSignature(GH_SECRET).verify(gh_request(signature="sha256=" + GH_SIGNATURE[7:].upper()))


def test_github_has_no_clock_a_years_old_signature_still_matches() -> None:
    GitHubSignature(GH_SECRET).verify(gh_request(), now=0)


@pytest.mark.parametrize("body", [b"Hello, World", b"Hello, World! ", b"hello, World!"])
def test_github_refuses_a_changed_body(body: bytes) -> None:
    assert refused(GitHubSignature(GH_SECRET), gh_request(body)) == (
        "the X-Hub-Signature-256 signature does not match: the body was changed, or the "
        "webhook's secret is not the one set in GitHub"
    )


def test_github_refuses_a_wrong_secret() -> None:
    assert "does not match" in refused(GitHubSignature("It's a secret to everybody"), gh_request())


def test_github_names_a_missing_header() -> None:
    assert refused(GitHubSignature(GH_SECRET), gh_request(signature=None)) == (
        "the request has no X-Hub-Signature-256 header, which GitHub signatures need"
    )


@pytest.mark.parametrize(
    "signature",
    [
        GH_SIGNATURE.removeprefix("sha256="),
        "sha1=" + GH_SIGNATURE.removeprefix("sha256="),
        GH_SIGNATURE[:-1],
        GH_SIGNATURE[:-1] + "g",
        "sha256=",
        "",
    ],
)
def test_github_refuses_a_malformed_header(signature: str) -> None:
    assert refused(GitHubSignature(GH_SECRET), gh_request(signature=signature)) == (
        "the X-Hub-Signature-256 header is not sha256= followed by 64 hex digits"
    )


def test_github_signs_non_utf8_bodies_byte_exact() -> None:
    body = b"\x80\x81 \xff\n"
    expected = hmac.new(GH_SECRET.encode(), body, hashlib.sha256).hexdigest()
    verifier = GitHubSignature(GH_SECRET)
    verifier.verify(gh_request(body, f"sha256={expected}"))
    assert "does not match" in refused(verifier, gh_request(body[:-1], f"sha256={expected}"))


# -- Stripe -----------------------------------------------------------------------------


def st_request(body: bytes = ST_BODY, header: str | None = None) -> WebhookRequest:
    headers = {"Content-Type": "application/json"}
    headers["Stripe-Signature"] = f"t={ST_TS},v1={ST_DIGEST}" if header is None else header
    return request(body, headers)


def test_stripe_accepts_a_signature_made_as_stripe_documents() -> None:
    verifier = StripeSignature(ST_SECRET)
    # The whole secret, whsec_ prefix included, is the key (Stripe does not decode it).
    independent = hmac.new(ST_SECRET.encode(), f"{ST_TS}.".encode() + ST_BODY, hashlib.sha256)
    assert independent.hexdigest() == ST_DIGEST
    assert verifier.sign(ST_TS, ST_BODY) == f"t={ST_TS},v1={ST_DIGEST}"
    verifier.verify(st_request(), now=ST_TS + 10)


def test_stripe_any_v1_passes_and_other_schemes_are_ignored() -> None:
    verifier = StripeSignature(ST_SECRET)
    other = StripeSignature("whsec_rolled").sign(ST_TS, ST_BODY).split(",")[1]
    for header in [
        f"t={ST_TS},{other},v1={ST_DIGEST}",
        f"t={ST_TS}, v1={ST_DIGEST}, v0={'6f' * 32}",
        f"v1={ST_DIGEST},t={ST_TS}",
    ]:
        verifier.verify(st_request(header=header), now=ST_TS)
    assert refused(verifier, st_request(header=f"t={ST_TS},{other}"), now=ST_TS) == (
        "no v1 signature in the Stripe-Signature header matches: the body was changed, or "
        "the webhook's secret is not the endpoint's signing secret"
    )


def test_stripe_refuses_a_changed_body_a_changed_time_or_a_wrong_secret() -> None:
    verifier = StripeSignature(ST_SECRET)
    assert "matches" in refused(verifier, st_request(ST_BODY + b" "), now=ST_TS)
    assert "matches" in refused(
        verifier, st_request(header=f"t={ST_TS + 1},v1={ST_DIGEST}"), now=ST_TS
    )
    assert "matches" in refused(StripeSignature("whsec_other"), st_request(), now=ST_TS)


def test_stripe_tolerance_holds_both_ways_and_is_configurable() -> None:
    verifier = StripeSignature(ST_SECRET)
    verifier.verify(st_request(), now=ST_TS + 300)
    assert refused(verifier, st_request(), now=ST_TS + 301) == (
        "the signature is too old: its t is 301 s ago, more than the 300 s allowed (a "
        "replayed request, or a clock that is wrong)"
    )
    assert "in the future: its t is 301 s ahead" in refused(verifier, st_request(), ST_TS - 301)
    lenient = StripeSignature(ST_SECRET, tolerance_s=3600)
    lenient.verify(st_request(), now=ST_TS + 3000)
    assert "more than the 0.5 s allowed" in refused(
        StripeSignature(ST_SECRET, tolerance_s=0.5), st_request(), now=ST_TS + 1
    )


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "the request has no Stripe-Signature header, which Stripe signatures need"),
        (
            f"{ST_TS},{ST_DIGEST}",
            "the Stripe-Signature header is not a list of name=value items (t=<time>,v1=<hex>)",
        ),
        (f"v1={ST_DIGEST}", "the Stripe-Signature header needs exactly one t=<Unix time> item"),
        (
            f"t={ST_TS},t={ST_TS},v1={ST_DIGEST}",
            "the Stripe-Signature header needs exactly one t=<Unix time> item",
        ),
        (
            f"t=soon,v1={ST_DIGEST}",
            "the Stripe-Signature header's t is not a Unix time in seconds: 'soon'",
        ),
        (f"t={ST_TS}", "the Stripe-Signature header holds no v1 signature"),
        (f"t={ST_TS},v1=zz", "no v1 signature in the Stripe-Signature header matches"),
    ],
)
def test_stripe_refuses_malformed_headers(header: str | None, message: str) -> None:
    req = st_request(header=header) if header is not None else request(ST_BODY, {})
    assert message in refused(StripeSignature(ST_SECRET), req, now=ST_TS)


# -- constructing, and the stored spec ---------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: StandardWebhooks(""), ValueError, "StandardWebhooks's secret is empty"),
        (lambda: StandardWebhooks("whsec_"), ValueError, "StandardWebhooks's secret is empty"),
        (
            lambda: StandardWebhooks("whsec_not base64!"),
            ValueError,
            "StandardWebhooks's secret is not valid base64 after its whsec_ prefix",
        ),
        (lambda: StandardWebhooks(b""), ValueError, "StandardWebhooks's secret is empty"),
        (lambda: GitHubSignature(""), ValueError, "GitHubSignature's secret is empty"),
        (
            lambda: GitHubSignature(42),
            TypeError,
            "GitHubSignature's secret is a str or bytes, not int",
        ),
        (lambda: StripeSignature(b""), ValueError, "StripeSignature's secret is empty"),
        (
            lambda: StripeSignature(ST_SECRET, tolerance_s=0),
            ValueError,
            "StripeSignature's tolerance_s is a positive number of seconds; got 0",
        ),
        (lambda: StripeSignature(ST_SECRET, tolerance_s=-5), ValueError, "got -5"),
        (lambda: StripeSignature(ST_SECRET, tolerance_s=True), ValueError, "got True"),
        (lambda: StripeSignature(ST_SECRET, tolerance_s="300"), ValueError, "got '300'"),
        (lambda: StripeSignature(ST_SECRET, tolerance_s=float("inf")), ValueError, "got inf"),
    ],
)
def test_bad_constructor_arguments_are_clear_errors(
    make: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        make()


@pytest.mark.parametrize(
    "verifier",
    [
        StandardWebhooks(SW_SECRET),
        GitHubSignature(GH_SECRET),
        StripeSignature(ST_SECRET),
        StripeSignature(ST_SECRET, tolerance_s=60),
    ],
    ids=repr,
)
def test_a_spec_rebuilds_the_same_verifier_through_json(verifier: WebhookVerifier) -> None:
    stored = json.loads(json.dumps(verifier.spec()))  # what the host keeps in its database
    rebuilt = verifier_from_spec(stored)
    assert rebuilt == verifier
    assert type(rebuilt) is type(verifier)
    assert rebuilt.spec() == verifier.spec()


def test_a_rebuilt_verifier_verifies_as_the_original() -> None:
    verifier_from_spec(StandardWebhooks(SW_SECRET).spec()).verify(sw_request(), now=SW_TS)
    verifier_from_spec(GitHubSignature(GH_SECRET).spec()).verify(gh_request())
    rebuilt = verifier_from_spec(StripeSignature(ST_SECRET, tolerance_s=10).spec())
    rebuilt.verify(st_request(), now=ST_TS + 10)
    assert "too old" in refused(rebuilt, st_request(), now=ST_TS + 11)


def test_repr_hides_the_secret() -> None:
    assert repr(StandardWebhooks(SW_SECRET)) == "StandardWebhooks(secret=<hidden>)"
    assert repr(GitHubSignature(GH_SECRET)) == "GitHubSignature(secret=<hidden>)"
    assert repr(StripeSignature(ST_SECRET, tolerance_s=60)) == (
        "StripeSignature(secret=<hidden>, tolerance_s=60)"
    )


KEY = base64.b64encode(GH_SECRET.encode()).decode()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("github", "a verifier spec is a dict, not str"),
        ({"key": KEY}, "a verifier spec needs a scheme (one of github, standard-webhooks, stripe)"),
        (
            {"scheme": "svix", "key": KEY},
            "a verifier spec's scheme must be one of github, standard-webhooks, stripe; got 'svix'",
        ),
        ({"scheme": 7}, "a verifier spec's scheme must be one of"),
        (
            {"scheme": "github"},
            "a malformed github verifier spec: 'key' (the secret, base64) is missing or not a str",
        ),
        (
            {"scheme": "github", "key": "%%%"},
            "a malformed github verifier spec: 'key' is not valid",
        ),
        ({"scheme": "github", "key": ""}, "a malformed github verifier spec: GitHubSignature's"),
        (
            {"scheme": "github", "key": KEY, "tolerance_s": 5},
            "a malformed github verifier spec: unknown fields tolerance_s",
        ),
        (
            {"scheme": "stripe", "key": KEY, "tolerance_s": -1},
            "a malformed stripe verifier spec: StripeSignature's tolerance_s is a positive",
        ),
    ],
)
def test_a_malformed_spec_is_a_clear_value_error(spec: Any, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)) as caught:
        verifier_from_spec(spec)
    assert KEY not in str(caught.value)
    assert GH_SECRET not in str(caught.value)


def test_agent_code_finds_the_names_where_the_docs_say() -> None:
    import corral
    import corral.sdk
    import corral.webhooks

    assert corral.WebhookRequest is corral.sdk.WebhookRequest is corral.webhooks.WebhookRequest
    assert corral.webhooks.GitHubSignature is GitHubSignature
    assert corral.webhooks.WebhookVerificationError is WebhookVerificationError
