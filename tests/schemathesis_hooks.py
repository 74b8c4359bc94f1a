"""Schemathesis hooks for `tests/tests/openapi_conformance.rs`.

`Idempotency-Key` as clients use it: a fresh key for each logical request. Schemathesis draws header
values from a small space, so it would send one key with different bodies, which the API answers 422 as
draft-ietf-httpapi-idempotency-key-header (section 2.7) asks; that is a rule about a sequence of requests,
not about one request's schema, and `tests/tests/concurrency.rs` covers it. Only schema-valid keys are
replaced: invalid ones (negative tests) must still be refused.
"""

import re
import uuid

import schemathesis

# The schema of the header, exactly (fullmatch: `$` alone would also accept a trailing newline).
VALID_KEY = re.compile(r"[!-~]{1,255}")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key" and isinstance(headers[name], str) and VALID_KEY.fullmatch(headers[name]):
            headers[name] = str(uuid.uuid4())


