// Command oci-image writes an OCI image layout holding one static binary, without pulling a base image.
//
// The image has a single layer: the binary at /<name>, /etc/passwd and /etc/group naming the unprivileged
// user 65532 the charts run as, the build machine's CA bundle at /etc/ssl/certs/ca-certificates.crt (for
// TLS to an OIDC issuer or an S3 endpoint with a public certificate), and an empty /tmp. Every entry has a
// fixed time and owner, so the same binary gives the same image digest.
//
//	oci-image -binary target/.../cp-api -name cp-api -tag 0.1.0 -out target/images/cp-api
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The user and group the images run as (the charts' runAsUser and runAsGroup).
const nonRoot = 65532

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "oci-image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	flags := flag.NewFlagSet("oci-image", flag.ContinueOnError)
	binary := flags.String("binary", "", "the static binary to put in the image")
	name := flags.String("name", "", "the image's name: the binary's name in the image and its entrypoint")
	tag := flags.String("tag", "", "the tag recorded in the layout's index (org.opencontainers.image.ref.name)")
	out := flags.String("out", "", "the OCI layout directory to write (replaced if it exists)")
	caBundle := flags.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "CA certificates to include; empty for none")
	epoch := flags.Int64("source-date-epoch", 0, "time of every file and of the image, in seconds since 1970")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *binary == "" || *name == "" || *tag == "" || *out == "" {
		flags.Usage()
		return errors.New("-binary, -name, -tag and -out are required")
	}
	created := time.Unix(*epoch, 0).UTC()
	img, err := build(*binary, *name, *caBundle, created)
	if err != nil {
		return err
	}
	if err := write(img, *out, *tag); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s:%s %s -> %s\n", *name, *tag, digest, *out)
	return nil
}

// build assembles the image: one layer on nothing, its config naming the binary as entrypoint.
func build(binary, name, caBundle string, created time.Time) (v1.Image, error) {
	layerTar, err := rootfs(binary, name, caBundle, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "oci-image " + name, Comment: "static binary"},
		MediaType: types.OCILayer,
	})
	if err != nil {
		return nil, fmt.Errorf("appending the layer: %w", err)
	}
	config, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	config = config.DeepCopy()
	config.OS = "linux"
	config.Architecture = "amd64"
	config.Created = v1.Time{Time: created}
	config.Config.Entrypoint = []string{"/" + name}
	config.Config.User = fmt.Sprintf("%d:%d", nonRoot, nonRoot)
	config.Config.WorkingDir = "/"
	config.Config.Env = []string{
		"PATH=/",
		"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
	}
	config.Config.Labels = map[string]string{"org.opencontainers.image.title": name}
	return mutate.ConfigFile(img, config)
}

// rootfs is the layer's tar: directories first, then files, all owned by root and dated `created`.
func rootfs(binary, name, caBundle string, created time.Time) ([]byte, error) {
	program, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/:/sbin/nologin\n", nonRoot, nonRoot)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", nonRoot)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(path string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: path + "/", Mode: mode, ModTime: created, Format: tar.FormatPAX})
	}
	file := func(path string, mode int64, content []byte) error {
		header := &tar.Header{Typeflag: tar.TypeReg, Name: path, Mode: mode, Size: int64(len(content)), ModTime: created, Format: tar.FormatPAX}
		if err := tw.WriteHeader(header); err != nil {
			return err
		}
		_, err := tw.Write(content)
		return err
	}
	for _, d := range []string{"etc", "etc/ssl", "etc/ssl/certs"} {
		if err := dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := dir("tmp", 0o1777); err != nil {
		return nil, err
	}
	if err := file("etc/passwd", 0o644, []byte(passwd)); err != nil {
		return nil, err
	}
	if err := file("etc/group", 0o644, []byte(group)); err != nil {
		return nil, err
	}
	if caBundle != "" {
		certs, err := os.ReadFile(caBundle)
		if err != nil {
			return nil, fmt.Errorf("CA bundle (-ca-bundle \"\" for none): %w", err)
		}
		if err := file("etc/ssl/certs/ca-certificates.crt", 0o644, certs); err != nil {
			return nil, err
		}
	}
	if err := file(filepath.Base(name), 0o755, program); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// write replaces `out` with an OCI image layout whose index holds the image under `tag`.
func write(img v1.Image, out, tag string) error {
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	path, err := layout.Write(out, empty.Index)
	if err != nil {
		return fmt.Errorf("creating %s: %w", out, err)
	}
	return path.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag,
	}))
}
