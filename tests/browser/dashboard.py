"""The dashboard in a real headless Chromium (Debian's, driven by Playwright; no browser is downloaded).

Run by tests/tests/system/dashboard.rs against a control plane it serves: signs in, provisions an instance
through the API, watches it appear and turn healthy on the page without a reload (the SSE feed), opens
its page (aspects, conditions, history timeline), creates a user through its Users panel (applied, its
password shown once and equal to the API's credentials read, kept in no storage), rotates and deletes it,
opens the fleet chart, and saves screenshots.
Exits non-zero with the reason on the first expectation that fails.
"""

import argparse
import base64
import json
import pathlib
import sys
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

parser = argparse.ArgumentParser()
parser.add_argument("--url", required=True)
parser.add_argument("--token", required=True)
parser.add_argument("--project", default="acme")
parser.add_argument("--cluster", default="eu-1")
parser.add_argument("--chromium", default="/usr/bin/chromium")
parser.add_argument("--out", required=True)
parser.add_argument("--kube-url", required=True, help="the simulated cluster's Kubernetes API")
args = parser.parse_args()
out = pathlib.Path(args.out)
out.mkdir(parents=True, exist_ok=True)
expect.set_options(timeout=60_000)


def call(method, path):
    request = urllib.request.Request(f"{args.url}/v1/projects/{args.project}{path}", method=method,
                                     headers={"Authorization": f"Bearer {args.token}"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, None


def provision(name):
    body = json.dumps({"name": name, "service": "postgresql", "version": "16", "plan": "starter",
                       "cluster": args.cluster, "config": {"max_connections": 150},
                       "acl": [{"cidr": "10.0.0.0/8", "description": "office"}]}).encode()
    request = urllib.request.Request(f"{args.url}/v1/projects/{args.project}/instances", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {args.token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 202, response.status
        return json.load(response)


with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # A wrong token is refused on the sign-in form.
    page.goto(f"{args.url}/")
    page.get_by_test_id("token").fill("cpat_not_a_token")
    page.get_by_test_id("project").fill(args.project)
    page.get_by_test_id("sign-in-submit").click()
    expect(page.get_by_test_id("sign-in-error")).to_contain_text("not valid")

    page.get_by_test_id("token").fill(args.token)
    page.get_by_test_id("sign-in-submit").click()
    expect(page.get_by_test_id("instances")).to_be_visible()
    expect(page.get_by_test_id("live")).to_have_text("live")
    page.evaluate("window.__notReloaded = true")

    operation = provision("orders")
    row = page.locator("tr[data-instance=orders]")
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-state", "healthy")
    assert page.evaluate("window.__notReloaded === true"), "the page reloaded instead of following the feed"
    page.screenshot(path=str(out / "instances-healthy.png"), full_page=True)

    # The filter hides what does not match.
    page.get_by_test_id("filter").fill("zzz")
    expect(page.locator("tr[data-instance]")).to_have_count(0)
    page.get_by_test_id("filter").fill("ord")
    expect(page.locator("tr[data-instance]")).to_have_count(1)
    page.get_by_test_id("state-filter").select_option("error")
    expect(page.locator("tr[data-instance]")).to_have_count(0)
    page.get_by_test_id("state-filter").select_option("healthy")
    expect(page.locator("tr[data-instance]")).to_have_count(1)

    row.get_by_role("link", name="orders").click()
    instance = page.get_by_test_id("instance")
    expect(instance).to_have_attribute("data-state", "healthy")
    expect(page.get_by_text("max_connections")).to_be_visible()
    expect(page.get_by_text("10.0.0.0/8")).to_be_visible()
    entries = page.get_by_test_id("history-entry")
    expect(entries.first).to_contain_text("InstanceProvisioned")
    expect(page.get_by_test_id("history")).to_contain_text("by admin@tests")
    # The observed side of the timeline: what the cluster's agent reported.
    expect(page.locator("li.observed").first).to_be_visible()
    page.screenshot(path=str(out / "instance-history.png"), full_page=True)

    # Users: the form offers the catalog's roles for the service.
    instance_id = instance.locator("dd").first.inner_text()
    users_path = f"/instances/{instance_id}/users"
    expect(page.get_by_test_id("user-role").locator("option")).to_have_text(["readwrite", "readonly"])
    # A refusal shows the API's reason, naming the field and the rule.
    page.get_by_test_id("user-name").fill("postgres")
    page.get_by_test_id("user-create").click()
    expect(page.get_by_test_id("user-message")).to_contain_text("/name: user_name_reserved")
    page.get_by_test_id("user-name").fill("reporting")
    page.get_by_test_id("user-role").select_option("readonly")
    page.get_by_test_id("user-create").click()
    user = page.locator("tr[data-user=reporting]")
    expect(user).to_have_attribute("data-state", "applied")
    expect(user.get_by_test_id("user-state")).to_have_text("applied")
    expect(user).to_contain_text("readonly")
    status, listed = call("GET", users_path)
    assert status == 200 and listed["users"] == [{"name": "reporting", "role": "readonly", "state": "applied"}], listed
    # The password, shown once, is the one the cluster holds for the user.
    secret = page.get_by_test_id("user-secret")
    expect(secret).to_have_attribute("data-user", "reporting")
    shown = page.get_by_test_id("user-password").inner_text()
    status, credentials = call("GET", f"{users_path}/reporting/credentials")
    assert status == 200 and credentials["username"] == "reporting", (status, credentials)
    assert shown == credentials["password"] and len(shown) >= 16, "the page shows another password than the API's"
    stored = page.evaluate("JSON.stringify([Object.entries(sessionStorage), Object.entries(localStorage)])")
    assert shown not in stored, "the password was put in the tab's storage"
    page.screenshot(path=str(out / "users.png"), full_page=True)
    page.get_by_test_id("user-secret-dismiss").click()
    expect(secret).to_have_count(0)
    assert shown not in page.content(), "the dismissed password is still on the page"

    # A rotation shows the new password once.
    user.get_by_test_id("user-rotate").click()
    expect(page.get_by_test_id("user-message")).to_contain_text("rotating done")
    rotated = page.get_by_test_id("user-password").inner_text()
    status, credentials = call("GET", f"{users_path}/reporting/credentials")
    assert rotated != shown and rotated == credentials["password"], "the rotated password is not the API's new one"
    page.get_by_test_id("user-secret-dismiss").click()

    # Someone edits the user's Secret to name another user: CloudNativePG refuses it (v1.30 runnable.go
    # getPassword), so the next rotation fails, and the page says why, on the row and in the message.
    other = base64.b64encode(b"someone").decode()
    patch = urllib.request.Request(f"{args.kube_url}/api/v1/namespaces/cp-{args.project}/secrets/orders.user.reporting",
                                   data=json.dumps({"data": {"username": other}}).encode(), method="PATCH",
                                   headers={"Content-Type": "application/merge-patch+json"})
    with urllib.request.urlopen(patch) as response:
        assert response.status == 200, response.status
    user.get_by_test_id("user-rotate").click()
    expect(page.get_by_test_id("user-message")).to_contain_text("rotate_user_password failed")
    expect(user).to_have_attribute("data-state", "error")
    expect(user.get_by_test_id("user-state")).to_have_text("failed")
    expect(user.get_by_test_id("user-reason")).to_contain_text("does not match role")
    expect(page.get_by_test_id("user-secret")).to_have_count(0)
    page.screenshot(path=str(out / "users-failed.png"), full_page=True)

    # Deleting asks for a second click, then the user is gone from the page and from the API.
    user.get_by_test_id("user-delete").click()
    expect(user.get_by_test_id("user-delete-confirm")).to_be_visible()
    status, listed = call("GET", users_path)
    assert status == 200 and len(listed["users"]) == 1, "one click deleted the user"
    user.get_by_test_id("user-delete-confirm").click()
    expect(user).to_have_count(0)
    expect(page.get_by_test_id("user-message")).to_contain_text("deleting done")
    status, listed = call("GET", users_path)
    assert status == 200 and listed["users"] == [], listed
    status, _ = call("GET", f"{users_path}/reporting")
    assert status == 404, f"the deleted user still answers {status}"

    page.get_by_test_id("nav-fleet").click()
    bar = page.locator(f"[data-testid=fleet-chart] rect[data-cluster={args.cluster}][data-state=healthy]")
    expect(bar).to_have_attribute("data-count", "1")
    page.screenshot(path=str(out / "fleet.png"), full_page=True)

    assert not errors, f"script errors on the page: {errors}"
    browser.close()

print(json.dumps({"operation": operation["id"], "screenshots": sorted(p.name for p in out.glob("*.png"))}))
