//! The OCI images `./dev images` writes (`target/images/<name>`, or `$CP_IMAGES_DIR`), the ones the charts
//! in `deploy/helm/` name: each is unpacked as a container runtime would (the layout's index, the image
//! manifest, its config and layers, every blob checked against its digest), and its entrypoint started from
//! the unpacked root, as the image's user, answers `--version` with the workspace's version. As root (CI
//! is) it runs under `chroot`, so nothing of the host's file system, no shared library in particular, is
//! there to help it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

const IMAGES: [&str; 3] = ["cp-api", "cp-projector", "cluster-agent"];

fn images_dir() -> PathBuf {
    std::env::var_os("CP_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/images"))
}

/// A blob of the layout, its SHA-256 checked against `digest`.
fn blob(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("{digest}: not a sha256 digest"));
    let path = layout.join("blobs/sha256").join(hex);
    let output = Command::new("sha256sum").arg(&path).output().unwrap();
    assert!(
        output.status.success(),
        "sha256sum {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let actual =
        String::from_utf8_lossy(&output.stdout).split_whitespace().next().unwrap_or_default().to_owned();
    assert_eq!(actual, hex, "{}: content does not match its digest", path.display());
    path
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn each_image_unpacks_and_its_binary_answers_version_from_the_unpacked_root() {
    let dir = images_dir();
    let version = env!("CARGO_PKG_VERSION");
    let root_user = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    for name in IMAGES {
        let layout = dir.join(name);
        assert!(
            layout.join("index.json").is_file(),
            "\n\n!!!!!!!! {} missing: run `./dev images` (static binaries in OCI layouts; ./dev test does) or set CP_IMAGES_DIR !!!!!!!!\n",
            layout.join("index.json").display()
        );
        let layout_file = json(&layout.join("oci-layout"));
        assert_eq!(layout_file["imageLayoutVersion"], "1.0.0");
        let index = json(&layout.join("index.json"));
        let entry = &index["manifests"][0];
        assert_eq!(entry["annotations"]["org.opencontainers.image.ref.name"], version, "{name}: tag");
        assert_eq!(entry["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        let manifest = json(&blob(&layout, entry["digest"].as_str().unwrap()));
        assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
        let config = json(&blob(&layout, manifest["config"]["digest"].as_str().unwrap()));
        assert_eq!(config["os"], "linux");
        assert_eq!(config["architecture"], "amd64");
        let entrypoint = config["config"]["Entrypoint"][0].as_str().unwrap().to_owned();
        assert_eq!(entrypoint, format!("/{name}"));
        // The charts' runAsUser/runAsGroup.
        assert_eq!(config["config"]["User"], "65532:65532");

        let root = tempfile::tempdir().unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "{name}: one layer, no base image");
        for layer in layers {
            assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
            let file = blob(&layout, layer["digest"].as_str().unwrap());
            let status =
                Command::new("tar").arg("-xzf").arg(&file).arg("-C").arg(root.path()).status().unwrap();
            assert!(status.success(), "{name}: unpacking {}", file.display());
        }
        let mut command = if root_user {
            let mut chroot = Command::new("chroot");
            chroot.arg("--userspec=65532:65532").arg(root.path()).arg(&entrypoint);
            chroot
        } else {
            Command::new(root.path().join(entrypoint.trim_start_matches('/')))
        };
        // Nothing of this process's environment; PATH only to find `chroot`.
        let output = command
            .arg("--version")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap_or_else(|e| panic!("{name}: starting {command:?}: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.trim() == format!("{name} {version}"),
            "{name} --version from the unpacked root ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
