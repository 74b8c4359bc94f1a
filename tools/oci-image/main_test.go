package main

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

func TestTheLayoutHoldsTheBinaryAsEntrypointAndIsReproducible(t *testing.T) {
	dir := t.TempDir()
	binary := filepath.Join(dir, "prog")
	if err := os.WriteFile(binary, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	digests := map[string]bool{}
	for _, out := range []string{"a", "b"} {
		img, err := build(binary, "prog", "", time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		if err := write(img, filepath.Join(dir, out), "1.0"); err != nil {
			t.Fatal(err)
		}
		digest, _ := img.Digest()
		digests[digest.String()] = true
	}
	if len(digests) != 1 {
		t.Fatalf("two builds of the same binary gave %d digests", len(digests))
	}
	index, err := layout.ImageIndexFromPath(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(manifest.Manifests) != 1 || manifest.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "1.0" {
		t.Fatalf("index: %+v", manifest.Manifests)
	}
	img, err := index.Image(manifest.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	config, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := config.Config.Entrypoint; len(got) != 1 || got[0] != "/prog" {
		t.Fatalf("entrypoint %v", got)
	}
	if config.Config.User != "65532:65532" {
		t.Fatalf("user %q", config.Config.User)
	}
	files := map[string]int64{}
	tr := tar.NewReader(mutate.Extract(img))
	for {
		header, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[header.Name] = header.Mode
	}
	if files["prog"] != 0o755 || files["tmp"] != 0o1777 || files["etc/passwd"] != 0o644 {
		t.Fatalf("files: %v", files)
	}
}
