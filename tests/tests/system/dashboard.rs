//! The dashboard end to end in a real headless Chromium: `tests/browser/dashboard.py` (Playwright from
//! PyPI driving Debian's `chromium`, both installed by `./dev`) signs in, watches an instance it
//! provisions turn healthy on the page through the live feed, opens its history timeline, creates,
//! rotates and deletes a user through the instance's Users panel (the simulator's agent applies it; a
//! rotation CloudNativePG refuses shows as failed with its reason), and opens the fleet chart. Screenshots land in `target/test-artifacts/dashboard/`.

use std::{path::PathBuf, process::Stdio, time::Duration};

use system_tests::{ADMIN_TOKEN, TestApi, cluster};

/// Python with Playwright: `$CP_PLAYWRIGHT_PYTHON`, else `.tools/venv/bin/python` where `./dev` installs it.
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("CP_PLAYWRIGHT_PYTHON") {
        return PathBuf::from(path);
    }
    let installed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/python");
    assert!(installed.exists(), "no Python with Playwright: run `./dev tools`, or set CP_PLAYWRIGHT_PYTHON");
    installed
}

/// Chromium: `$CP_CHROMIUM`, else Debian's.
fn chromium() -> PathBuf {
    let path =
        std::env::var_os("CP_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        path.exists(),
        "no Chromium at {}: run `./dev tools` (apt-get install chromium), or set CP_CHROMIUM",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_turns_healthy_live_on_the_dashboard_and_its_history_shows() {
    let api = TestApi::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    let router = api.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    // Slow enough to be seen reconciling first.
    let (_sim, address) = cluster::simulator(Duration::from_secs(2)).await;
    let _agent = cluster::agent(&api, "eu-1", address).await;

    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = here.join("../target/test-artifacts/dashboard");
    let _ = std::fs::remove_dir_all(&out);
    let run = tokio::process::Command::new(python())
        .arg(here.join("browser/dashboard.py"))
        .args(["--url", &url, "--token", ADMIN_TOKEN, "--kube-url", &format!("http://{address}"), "--out"])
        .arg(&out)
        .arg("--chromium")
        .arg(chromium())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser test ends within 4 minutes")
        .expect("run the browser test");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser test failed:\n{stdout}\n{stderr}");
    for shot in
        ["instances-healthy.png", "instance-history.png", "users.png", "users-failed.png", "fleet.png"]
    {
        let size = std::fs::metadata(out.join(shot)).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "screenshot {shot} is missing or empty ({size} bytes)");
    }
}
