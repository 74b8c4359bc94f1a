"""Schemathesis hooks for `tests/tests/openapi_conformance.rs`.

`Idempotency-Key` as clients use it: a fresh key for each logical request. Schemathesis draws header
values from a small space, so it would send one key with different bodies, which the API answers 422 as
draft-ietf-httpapi-idempotency-key-header (section 2.7) asks; that is a rule about a sequence of requests,
not about one request's schema, and `tests/tests/concurrency.rs` covers it. Only schema-valid keys are
replaced: invalid ones (negative tests) must still be refused.
"""

import os
import re
import uuid

import schemathesis

# The schema of the header, exactly (fullmatch: `$` alone would also accept a trailing newline).
VALID_KEY = re.compile(r"[!-~]{1,255}")


# Tenancy (`another_project_s_token_finds_nothing_of_it`): every request names project B and, where a
# route has one, an instance that exists in B, while the token is project A's.
FOREIGN_PROJECT = os.environ.get("CP_TEST_FOREIGN_PROJECT")
FOREIGN_INSTANCE = os.environ.get("CP_TEST_FOREIGN_INSTANCE")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key" and isinstance(headers[name], str) and VALID_KEY.fullmatch(headers[name]):
            headers[name] = str(uuid.uuid4())
    if FOREIGN_PROJECT and case.path_parameters and "project" in case.path_parameters:
        case.path_parameters["project"] = FOREIGN_PROJECT
        if FOREIGN_INSTANCE and "id" in case.path_parameters:
            case.path_parameters["id"] = FOREIGN_INSTANCE


if FOREIGN_PROJECT:

    @schemathesis.check
    def another_project_is_not_found(ctx, response, case):
        """Project A's token finds nothing of project B: 404 for every read and write (401 without a token)."""
        sent = {name.lower(): value for name, value in response.request.headers.items()}
        named = (case.path_parameters or {}).get("project") == FOREIGN_PROJECT
        # Project A's valid token only: without one (or with a broken one) the answer is 401, and a method
        # the route does not serve (schemathesis probes TRACE and the like) is 405 whoever asks.
        own_token = sent.get("authorization") == f"Bearer {os.environ['CP_TEST_API_TOKEN']}"
        documented = response.request.method.upper() == case.operation.method.upper()
        if not (named and own_token and documented):
            return
        # Which operations were tried, so the test can tell that every project route was.
        with open(os.environ["CP_TEST_TENANCY_LOG"], "a", encoding="utf-8") as log:
            log.write(f"{case.operation.method.upper()} {case.operation.path} {response.status_code}\n")
        if response.status_code != 404:
            raise AssertionError(
                f"{case.method} {response.request.url} with another project's token answered "
                f"{response.status_code}, not 404"
            )


