"""Verification as pure functions: Standard Webhooks HMAC and signed webhook-URL tokens."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest
import standardwebhooks
import svix.webhooks
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st
from itsdangerous import BadData, BadSignature, Signer, URLSafeSerializer

from config.settings import decode_webhook_secret
from receiver.core.signing import (
    TOKEN_SALT,
    TokenClaims,
    VerificationError,
    sign_standard_webhook,
    verify_standard_webhook,
    verify_webhook_token,
    webhook_token,
)
from tests.helpers import OTHER_WEBHOOK_KEY, WEBHOOK_KEY, WEBHOOK_SECRET, signed_headers

# The published Standard Webhooks test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

BODY = b'{"id": "job_1", "status": "succeeded"}'
NOW = 1_700_000_000


def vector_headers(signature: str = VECTOR_SIGNATURE) -> dict[str, str]:
    return {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": signature,
    }


def verify(
    headers: dict[str, str], body: bytes = BODY, *, keys: Sequence[bytes] = (WEBHOOK_KEY,)
) -> str:
    return verify_standard_webhook(headers, body, keys=keys, now=NOW, tolerance=300)


def reason_of(
    headers: dict[str, str], body: bytes = BODY, *, keys: Sequence[bytes] = (WEBHOOK_KEY,)
) -> str:
    with pytest.raises(VerificationError) as caught:
        verify(headers, body, keys=keys)
    return caught.value.reason


# --- the published vector ---------------------------------------------------------------


def test_published_vector_signs() -> None:
    key = decode_webhook_secret(VECTOR_SECRET)
    signature = sign_standard_webhook(
        key, msg_id=VECTOR_ID, timestamp=VECTOR_TIMESTAMP, body=VECTOR_BODY
    )
    assert signature == VECTOR_SIGNATURE


def test_published_vector_verifies_with_now_argument() -> None:
    key = decode_webhook_secret(VECTOR_SECRET)
    msg_id = verify_standard_webhook(
        vector_headers(), VECTOR_BODY, keys=[key], now=VECTOR_TIMESTAMP + 10, tolerance=300
    )
    assert msg_id == VECTOR_ID


@freeze_time("2021-02-26 16:22:10")  # 1614356530: a day after the vector was signed
def test_published_vector_is_too_old_a_day_later() -> None:
    key = decode_webhook_secret(VECTOR_SECRET)
    with pytest.raises(VerificationError) as caught:
        verify_standard_webhook(
            vector_headers(), VECTOR_BODY, keys=[key], now=time.time(), tolerance=300
        )
    assert caught.value.reason == "timestamp_too_old"


def test_published_vector_rejects_one_changed_byte() -> None:
    key = decode_webhook_secret(VECTOR_SECRET)
    with pytest.raises(VerificationError) as caught:
        verify_standard_webhook(
            vector_headers(),
            b'{"test": 2432232315}',
            keys=[key],
            now=VECTOR_TIMESTAMP,
            tolerance=300,
        )
    assert caught.value.reason == "bad_signature"


# --- Standard Webhooks verification -----------------------------------------------------


def test_valid_signature_returns_message_id() -> None:
    headers = signed_headers(BODY, msg_id="msg_42", timestamp=NOW)
    assert verify(headers) == "msg_42"


def test_svix_aliases_are_accepted() -> None:
    headers = signed_headers(BODY, msg_id="msg_svix", timestamp=NOW, prefix="svix")
    assert "webhook-id" not in headers
    assert verify(headers) == "msg_svix"


def test_any_of_several_signatures_may_match() -> None:
    headers = signed_headers(BODY, timestamp=NOW)
    good = headers["webhook-signature"]
    wrong = sign_standard_webhook(OTHER_WEBHOOK_KEY, msg_id="msg_1", timestamp=NOW, body=BODY)
    headers["webhook-signature"] = f"v2,abc {wrong}  {good} v1,!!notbase64"
    assert verify(headers) == "msg_1"


def test_any_of_several_secrets_may_match() -> None:
    headers = signed_headers(BODY, timestamp=NOW, key=OTHER_WEBHOOK_KEY)
    assert reason_of(headers) == "bad_signature"
    assert verify(headers, keys=[WEBHOOK_KEY, OTHER_WEBHOOK_KEY]) == "msg_1"


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ("body", "a tampered body"),
        ("id", "another message id"),
        ("timestamp", "another timestamp"),
    ],
)
def test_signature_covers_id_timestamp_and_body(change: str, where: str) -> None:
    headers = signed_headers(BODY, msg_id="msg_1", timestamp=NOW)
    body = BODY
    if change == "body":
        body = BODY.replace(b"succeeded", b"failed")
    elif change == "id":
        headers["webhook-id"] = "msg_2"
    else:
        headers["webhook-timestamp"] = str(NOW + 1)
    assert reason_of(headers, body) == "bad_signature", where


def test_wrong_key_is_refused() -> None:
    headers = signed_headers(BODY, timestamp=NOW, key=OTHER_WEBHOOK_KEY)
    assert reason_of(headers) == "bad_signature"


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (-301, "timestamp_too_old"),
        (301, "timestamp_in_future"),
    ],
)
def test_timestamp_outside_tolerance_is_refused(offset: int, reason: str) -> None:
    headers = signed_headers(BODY, timestamp=NOW + offset)
    assert reason_of(headers) == reason


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_timestamp_on_the_tolerance_edge_is_accepted(offset: int) -> None:
    headers = signed_headers(BODY, timestamp=NOW + offset)
    assert verify(headers) == "msg_1"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_refused(missing: str) -> None:
    headers = signed_headers(BODY, timestamp=NOW)
    del headers[missing]
    assert reason_of(headers) == "missing_headers"


@pytest.mark.parametrize(
    "signature",
    [
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",  # no version
        "v1,",
        "v1,not base64!",
        "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "v1g0hM9SsE",
    ],
)
def test_malformed_signature_header_is_refused(signature: str) -> None:
    headers = signed_headers(BODY, timestamp=NOW)
    headers["webhook-signature"] = signature
    assert reason_of(headers) == "malformed_signature"


@pytest.mark.parametrize("timestamp", ["abc", "-5", "1.7e9", "17000000000000", "١٢٣"])
def test_malformed_timestamp_is_refused(timestamp: str) -> None:
    headers = signed_headers(BODY, timestamp=NOW)
    headers["webhook-timestamp"] = timestamp
    assert reason_of(headers) == "malformed_timestamp"


def test_overlong_headers_are_refused() -> None:
    headers = signed_headers(BODY, timestamp=NOW)
    headers["webhook-signature"] = " ".join([headers["webhook-signature"]] * 200)
    assert reason_of(headers) == "malformed_headers"


def test_no_configured_key_refuses_everything() -> None:
    headers = signed_headers(BODY, timestamp=NOW)
    assert reason_of(headers, keys=[]) == "not_configured"


def test_truncated_signature_does_not_match() -> None:
    headers = signed_headers(BODY, timestamp=NOW)
    digest = base64.b64decode(headers["webhook-signature"].removeprefix("v1,"))
    headers["webhook-signature"] = "v1," + base64.b64encode(digest[:16]).decode()
    assert reason_of(headers) == "bad_signature"


def test_error_messages_carry_no_secret() -> None:
    headers = signed_headers(BODY, timestamp=NOW, key=OTHER_WEBHOOK_KEY)
    with pytest.raises(VerificationError) as caught:
        verify(headers)
    text = f"{caught.value} {caught.value.message} {caught.value.reason}"
    assert headers["webhook-signature"].removeprefix("v1,") not in text
    assert base64.b64encode(WEBHOOK_KEY).decode() not in text


# --- against the reference implementations ---------------------------------------------
# The standardwebhooks package (the specification's Python library) and svix (whose webhook
# class the Svix-style senders use) sign here, and verify what this project signs.

#: A 23-byte key: its base64 needs one "=", which the reference libraries let senders drop.
ODD_KEY = b"a-23-byte-signing-key!!"
ODD_SECRET_UNPADDED = "whsec_" + base64.b64encode(ODD_KEY).decode().rstrip("=")


def reference_headers(
    secret: str, body: bytes, *, msg_id: str = "msg_ref", timestamp: int = NOW, prefix: str
) -> dict[str, str]:
    """Return headers signed by the standardwebhooks library, under ``prefix``-* names."""
    signature = standardwebhooks.Webhook(secret).sign(
        msg_id, datetime.fromtimestamp(timestamp, tz=UTC), body.decode()
    )
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(timestamp),
        f"{prefix}-signature": signature,
    }


@pytest.mark.parametrize("secret", [WEBHOOK_SECRET, VECTOR_SECRET, ODD_SECRET_UNPADDED])
@pytest.mark.parametrize("prefix", ["webhook", "svix"])
def test_reference_signatures_verify(secret: str, prefix: str) -> None:
    headers = reference_headers(secret, BODY, prefix=prefix)
    assert verify(headers, keys=[decode_webhook_secret(secret)]) == "msg_ref"


def test_svix_library_signatures_verify() -> None:
    signature = svix.webhooks.Webhook(ODD_SECRET_UNPADDED).sign(
        "msg_svix", datetime.fromtimestamp(NOW, tz=UTC), BODY.decode()
    )
    headers = {"svix-id": "msg_svix", "svix-timestamp": str(NOW), "svix-signature": signature}
    assert verify(headers, keys=[decode_webhook_secret(ODD_SECRET_UNPADDED)]) == "msg_svix"


def test_unpadded_secret_is_the_key_the_reference_library_uses() -> None:
    assert base64.b64encode(ODD_KEY).decode().endswith("=")
    assert not ODD_SECRET_UNPADDED.endswith("=")
    assert decode_webhook_secret(ODD_SECRET_UNPADDED) == ODD_KEY
    assert decode_webhook_secret(ODD_SECRET_UNPADDED + "==") == ODD_KEY
    headers = reference_headers(ODD_SECRET_UNPADDED, BODY, prefix="webhook")
    assert reason_of(headers, keys=[ODD_KEY[:-1]]) == "bad_signature"


@pytest.mark.parametrize(
    "reference",
    [standardwebhooks.Webhook, svix.webhooks.Webhook],
    ids=["standardwebhooks", "svix"],
)
def test_reference_libraries_verify_what_this_project_signs(
    reference: Callable[[str], standardwebhooks.Webhook | svix.webhooks.Webhook],
) -> None:
    # The reference verifiers read the clock: sign for now.
    stamp = int(time.time())
    signature = sign_standard_webhook(ODD_KEY, msg_id="msg_ours", timestamp=stamp, body=BODY)
    prefix = "svix" if reference is svix.webhooks.Webhook else "webhook"
    headers = {
        f"{prefix}-id": "msg_ours",
        f"{prefix}-timestamp": str(stamp),
        f"{prefix}-signature": signature,
    }
    reference(ODD_SECRET_UNPADDED).verify(BODY, headers)  # raises when it does not verify
    tampered = BODY.replace(b"succeeded", b"failed")
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        reference(ODD_SECRET_UNPADDED).verify(tampered, headers)


def test_valid_svix_set_beside_a_bad_webhook_signature_is_accepted() -> None:
    # What the svix library accepts, so what a sender tested against it may send.
    headers = {
        **reference_headers(WEBHOOK_SECRET, BODY, msg_id="msg_svix", prefix="svix"),
        **reference_headers(WEBHOOK_SECRET, BODY, msg_id="msg_std", prefix="webhook"),
    }
    headers["webhook-signature"] = headers["webhook-signature"][:-6] + "AAAAA="
    with freeze_time(datetime.fromtimestamp(NOW, tz=UTC)):
        svix.webhooks.Webhook(WEBHOOK_SECRET).verify(BODY, headers)
    assert verify(headers) == "msg_svix"


def test_valid_webhook_set_beside_a_bad_svix_signature_is_accepted() -> None:
    # What the standardwebhooks library accepts: it reads only the webhook-* set.
    headers = {
        **reference_headers(WEBHOOK_SECRET, BODY, msg_id="msg_std", prefix="webhook"),
        **reference_headers(WEBHOOK_SECRET, BODY, msg_id="msg_svix", prefix="svix"),
    }
    headers["svix-signature"] = "v1,bm90IHRoZSBzaWduYXR1cmU="
    with freeze_time(datetime.fromtimestamp(NOW, tz=UTC)):
        standardwebhooks.Webhook(WEBHOOK_SECRET).verify(BODY, headers)
    assert verify(headers) == "msg_std"


def test_when_no_set_verifies_the_webhook_sets_reason_is_given() -> None:
    headers = {
        **reference_headers(WEBHOOK_SECRET, BODY, timestamp=NOW - 3600, prefix="webhook"),
        **reference_headers(WEBHOOK_SECRET, BODY, prefix="svix"),
    }
    headers["svix-signature"] = "v1,bm90IHRoZSBzaWduYXR1cmU="
    assert reason_of(headers) == "timestamp_too_old"
    del headers["webhook-id"]  # incomplete: only the svix set is tried
    assert reason_of(headers) == "bad_signature"


def test_a_mix_of_the_two_sets_is_no_complete_set() -> None:
    headers = reference_headers(WEBHOOK_SECRET, BODY, prefix="webhook")
    mixed = {
        "webhook-id": headers["webhook-id"],
        "svix-timestamp": headers["webhook-timestamp"],
        "svix-signature": headers["webhook-signature"],
    }
    assert reason_of(mixed) == "missing_headers"


@settings(max_examples=60, deadline=None)
@given(
    key=st.binary(min_size=16, max_size=64),
    msg_id=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1),
    body=st.text(max_size=300),
    prefix=st.sampled_from(["webhook", "svix"]),
)
def test_any_reference_signature_verifies_and_any_changed_byte_does_not(
    key: bytes, msg_id: str, body: str, prefix: str
) -> None:
    secret = "whsec_" + base64.b64encode(key).decode().rstrip("=")
    raw = body.encode()
    headers = reference_headers(secret, raw, msg_id=msg_id[:180], prefix=prefix)
    keys = [decode_webhook_secret(secret)]
    assert verify(headers, raw, keys=keys) == msg_id[:180]
    assert reason_of(headers, raw + b" ", keys=keys) == "bad_signature"


# --- webhook-URL tokens -----------------------------------------------------------------

NEW_KEY = "new-secret-key-0123456789"
OLD_KEY = "old-secret-key-0123456789"


def test_token_round_trip() -> None:
    token = webhook_token([NEW_KEY], submission_id="sub_1", user_id="user_1")
    assert verify_webhook_token([NEW_KEY], token) == TokenClaims("sub_1", "user_1")


def test_token_signed_with_old_key_verifies_after_rotation() -> None:
    old_token = webhook_token([OLD_KEY], submission_id="sub_1", user_id="user_1")
    assert verify_webhook_token([NEW_KEY, OLD_KEY], old_token) == TokenClaims("sub_1", "user_1")


def test_new_tokens_are_signed_with_the_newest_key() -> None:
    token = webhook_token([NEW_KEY, OLD_KEY], submission_id="sub_1", user_id="user_1")
    assert verify_webhook_token([NEW_KEY], token).submission_id == "sub_1"
    with pytest.raises(VerificationError):
        verify_webhook_token([OLD_KEY], token)


def test_token_after_old_key_is_dropped_is_refused() -> None:
    old_token = webhook_token([OLD_KEY], submission_id="sub_1", user_id="user_1")
    with pytest.raises(VerificationError) as caught:
        verify_webhook_token([NEW_KEY], old_token)
    assert caught.value.reason == "bad_token"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: t.split(".")[0],
        lambda t: "",
        lambda t: "x" * 2000,
    ],
)
def test_tampered_token_is_refused(mangle: Callable[[str], str]) -> None:
    token = webhook_token([NEW_KEY], submission_id="sub_1", user_id="user_1")
    with pytest.raises(VerificationError) as caught:
        verify_webhook_token([NEW_KEY], mangle(token))
    assert caught.value.reason == "bad_token"


def test_token_with_another_salt_is_refused() -> None:
    foreign = URLSafeSerializer(NEW_KEY, salt="something-else").dumps({"s": "sub_1", "u": "u"})
    with pytest.raises(VerificationError):
        verify_webhook_token([NEW_KEY], foreign)


def test_token_with_wrong_claim_shape_is_refused() -> None:
    odd = URLSafeSerializer(NEW_KEY, salt=TOKEN_SALT).dumps({"s": "sub_1", "u": 7})
    with pytest.raises(VerificationError):
        verify_webhook_token([NEW_KEY], odd)


@given(
    submission_id=st.text(max_size=200),
    user_id=st.text(max_size=200),
    keys=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=3),
)
@settings(max_examples=300, deadline=None)
def test_tokens_are_those_itsdangerous_makes(
    submission_id: str, user_id: str, keys: list[str]
) -> None:
    """The token is built without itsdangerous's serializer, but must be its token exactly."""
    made = webhook_token(keys, submission_id=submission_id, user_id=user_id)
    reference = URLSafeSerializer(list(reversed(keys)), salt=TOKEN_SALT)
    assert made == reference.dumps({"s": submission_id, "u": user_id})
    assert reference.loads(made) == {"s": submission_id, "u": user_id}
    claims = verify_webhook_token(keys, made)
    assert (claims.submission_id, claims.user_id) == (submission_id, user_id)


@pytest.mark.parametrize(
    "submission_id",
    ["sub_1", 'sub_"1', "sub\\1", "sub\n1", "sub\x7f1", "sub_é", "sub\u20281", "sub \t"],
)
def test_ids_json_must_escape_make_the_tokens_itsdangerous_makes(submission_id: str) -> None:
    """Plain ids skip json.dumps; anything JSON writes otherwise must still go through it."""
    made = webhook_token(["k" * 20], submission_id=submission_id, user_id=submission_id)
    reference = URLSafeSerializer(["k" * 20], salt=TOKEN_SALT)
    assert made == reference.dumps({"s": submission_id, "u": submission_id})


def test_long_repetitive_ids_make_compressed_tokens_as_itsdangerous_does() -> None:
    made = webhook_token(["k" * 20], submission_id="a" * 200, user_id="a" * 200)
    assert made.startswith(".")  # itsdangerous's mark of a compressed payload
    reference = URLSafeSerializer(["k" * 20], salt=TOKEN_SALT)
    assert made == reference.dumps({"s": "a" * 200, "u": "a" * 200})


def _by_itsdangerous(keys: list[str], token: str) -> object:
    """What itsdangerous's serializer makes of ``token``: claims, a refusal, or its error."""
    try:
        claims = URLSafeSerializer(list(reversed(keys)), salt=TOKEN_SALT).loads(token)
    except BadSignature:
        return "refused"
    except BadData as exc:  # a valid signature over a payload that is not a token's
        return type(exc).__name__
    if isinstance(claims, dict) and all(isinstance(claims.get(k), str) for k in "su"):
        return (claims["s"], claims["u"])
    return "refused"


def _by_us(keys: list[str], token: str) -> object:
    try:
        claims = verify_webhook_token(keys, token)
    except VerificationError:
        return "refused"
    except BadData as exc:
        return type(exc).__name__
    return (claims.submission_id, claims.user_id)


_KEYS = st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=3)


@st.composite
def _tokens(draw: st.DrawFn) -> tuple[list[str], str]:
    """A list of keys and a token: valid, signed by another key, mangled, or made up."""
    keys, signing = draw(_KEYS), draw(_KEYS)
    signer_keys = draw(st.sampled_from([keys, signing, keys[-1:]]))
    kind = draw(st.sampled_from(["claims", "payload", "raw", "text"]))
    if kind == "claims":
        text = st.text(max_size=60)
        token = webhook_token(signer_keys, submission_id=draw(text), user_id=draw(text))
    elif kind == "payload":  # signed, but not the claims a token holds
        value = draw(
            st.one_of(
                st.integers(),
                st.lists(st.text(max_size=5)),
                st.dictionaries(
                    st.sampled_from("suv"), st.one_of(st.text(max_size=5), st.integers())
                ),
            )
        )
        token = URLSafeSerializer(list(reversed(signer_keys)), salt=TOKEN_SALT).dumps(value)
    elif kind == "raw":  # signed bytes that are no serialized payload at all
        raw = draw(st.binary(max_size=40).filter(lambda b: b"." not in b[-1:]))
        token = Signer(list(reversed(signer_keys)), salt=TOKEN_SALT).sign(raw).decode("latin-1")
    else:
        token = draw(st.text(alphabet="eyJ.-_=abcAB01 é\u00ff", max_size=60))
    if draw(st.booleans()):  # mangle: one character replaced, inserted or dropped
        at = draw(st.integers(0, len(token)))
        insert = draw(st.sampled_from(["", "A", ".", "=", "é", " ", "!"]))
        token = token[:at] + insert + token[at + draw(st.integers(0, 1)) :]
    return keys, token


@given(_tokens())
@settings(max_examples=500, deadline=None)
def test_a_token_verifies_exactly_when_itsdangerous_accepts_it(case: tuple[list[str], str]) -> None:
    """Verified without itsdangerous's serializer, but to its verdict on every token."""
    keys, token = case
    assert _by_us(keys, token) == _by_itsdangerous(keys, token)


@pytest.mark.parametrize("insert", ["!", " ", "é", "=", "==", ".", "A"])
@pytest.mark.parametrize("where", [-27, -10, -1])
def test_a_character_added_to_a_signature_is_judged_as_itsdangerous_judges_it(
    insert: str, where: int
) -> None:
    # itsdangerous decodes base64 leniently: what is not of its alphabet is skipped.
    token = webhook_token([NEW_KEY, OLD_KEY], submission_id="sub_1", user_id="user_1")
    changed = token[:where] + insert + token[where:]
    assert _by_us([NEW_KEY, OLD_KEY], changed) == _by_itsdangerous([NEW_KEY, OLD_KEY], changed)
