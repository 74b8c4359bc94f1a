"""Schemathesis hooks for `tests/tests/system/osb_conformance.rs`.

The v2.17 document types `service_id` and `plan_id` as any string, so schemathesis would almost never name a
service and plan of the broker's catalog, and every provision would stop at 400: the run would test refusals
only. A platform takes these ids from `GET /v2/catalog`; so does this hook, for every other generated request
that carries them (by a hash of the case, so a run is repeatable), together with a Cloud Foundry `context`
that maps to a project. Schema-invalid requests (negative tests) are left alone.

The document omits some statuses the spec requires; the document itself says "If the spec and this document
conflict, the spec is the authority". `before_load_schema` adds exactly those to the loaded copy (the file in
`tests/osb/` stays as published), each with its citation below.
"""

import hashlib
import json
import os

import schemathesis

CATALOG = json.loads(os.environ["CP_TEST_OSB_CATALOG"])
PLANS = [(s["id"], p["id"]) for s in CATALOG["services"] for p in s["plans"]]


# (method, path, status, the spec's words: `spec.md` at tag v2.17)
SPEC_STATUSES = [
    # *Platform to Service Broker Authentication*: "the Service Broker MUST authenticate the request … and
    # MUST return a 401 Unauthorized response if the authentication fails" (the other operations list it).
    ("get", "/v2/catalog", "401", "Unauthorized"),
    ("get", "/v2/service_instances/{instance_id}", "401", "Unauthorized"),
    ("get", "/v2/service_instances/{instance_id}/service_bindings/{binding_id}", "401", "Unauthorized"),
    # *API Version Header*: "If the request from the Platform to the Service Broker doesn't contain this
    # header, then the Service Broker MAY reject the request with 400 Bad Request" (schemathesis's negative
    # tests leave the required header out; the other operations list 400).
    ("get", "/v2/catalog", "400", "Bad Request"),
    ("get", "/v2/service_instances/{instance_id}", "400", "Bad Request"),
    ("get", "/v2/service_instances/{instance_id}/service_bindings/{binding_id}", "400", "Bad Request"),
    # *Fetching a Service Instance*, 422: "MUST be returned if the Service Instance is being updated and
    # therefore cannot be fetched at this time … error code ConcurrencyError".
    ("get", "/v2/service_instances/{instance_id}", "422", "Unprocessable Entity"),
]


@schemathesis.hook
def before_load_schema(context, raw_schema):
    for method, path, status, description in SPEC_STATUSES:
        responses = raw_schema["paths"][path][method]["responses"]
        responses.setdefault(
            status,
            {
                "description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        )


def _pick(case):
    seed = hashlib.sha256(repr((case.method, case.path_parameters, case.body, case.query)).encode()).digest()
    if seed[0] % 2:
        return None
    return PLANS[seed[1] % len(PLANS)]


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    chosen = _pick(case)
    if chosen is None:
        return
    service_id, plan_id = chosen
    if isinstance(case.body, dict) and isinstance(case.body.get("service_id"), str):
        case.body["service_id"] = service_id
        if isinstance(case.body.get("plan_id"), str):
            case.body["plan_id"] = plan_id
        if "organization_guid" in case.body or "context" in case.body:
            case.body["context"] = {"platform": "cloudfoundry", "organization_guid": "org", "space_guid": "space"}
    if isinstance(case.query, dict):
        if isinstance(case.query.get("service_id"), str):
            case.query["service_id"] = service_id
        if isinstance(case.query.get("plan_id"), str):
            case.query["plan_id"] = plan_id
