package provider

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"controlplane.local/terraform-provider-cp/internal/acctest"
)

// As a user would: the provider built and installed in a filesystem mirror, then the core's own CLI —
// init (which records the package's hashes in .terraform.lock.hcl), plan, apply, a plan that must find
// no changes (-detailed-exitcode 0), destroy — with TF_CLI_CONFIG_FILE set by the test. No
// terraform-plugin-testing, no reattach: the core starts the provider binary itself.
func TestAccCLI_asAUser(t *testing.T) {
	if os.Getenv("TF_ACC") == "" {
		t.Skip("TF_ACC not set")
	}
	dumpOnFailure(t)
	core := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if core == "" {
		t.Skip("TF_ACC_TERRAFORM_PATH not set")
	}
	host := os.Getenv("TF_ACC_PROVIDER_HOST")
	if host == "" {
		host = "registry.terraform.io"
	}
	dir := t.TempDir()
	const version = "0.1.0"
	platform := runtime.GOOS + "_" + runtime.GOARCH
	mirror := filepath.Join(dir, "mirror")
	pkg := filepath.Join(mirror, host, "example", "cp", version, platform)
	build := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o",
		filepath.Join(pkg, "terraform-provider-cp_v"+version), ".")
	build.Dir = filepath.Join(acctest.RepoRoot(), "terraform-provider")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cliConfig := filepath.Join(dir, "cli.tfrc")
	write(t, cliConfig, fmt.Sprintf(`provider_installation {
  filesystem_mirror {
    path    = %q
    include = ["example/cp"]
  }
}
`, mirror))
	work := filepath.Join(dir, "work")
	mainTF := func(version string, protected bool) string {
		return fmt.Sprintf(`
terraform {
  required_providers {
    cp = { source = "example/cp" }
  }
}

provider "cp" {}

resource "cp_instance" "cli" {
  name    = "tf-cli"
  service = "mongodb"
  version = %q
  plan    = "starter"
  cluster = "eu-1"
  config  = { profiling_level = "slow_op" }
  acl     = [{ cidr = "198.51.100.0/24", description = "ci" }, { cidr = "192.0.2.0/24" }]

  deletion_protection = %t

  timeouts {
    create = "3m"
    update = "3m"
    delete = "3m"
  }
}
`, version, protected)
	}
	write(t, filepath.Join(work, "main.tf"), mainTF("7.0", true))
	run := func(wantCode int, args ...string) string {
		t.Helper()
		cmd := exec.Command(core, args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+cliConfig, "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1",
			"TF_PLUGIN_CACHE_DIR=", "TF_REATTACH_PROVIDERS=")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatalf("%s %v: %v", filepath.Base(core), args, err)
		}
		if code != wantCode {
			t.Fatalf("%s %v exited %d, want %d:\n%s", filepath.Base(core), args, code, wantCode, out.String())
		}
		return out.String()
	}
	run(0, "init", "-input=false")
	lock, err := os.ReadFile(filepath.Join(work, ".terraform.lock.hcl"))
	if err != nil || !strings.Contains(string(lock), `"h1:`) || !strings.Contains(string(lock), host+"/example/cp") {
		t.Fatalf("lock file without the provider's hashes: %v\n%s", err, lock)
	}
	run(2, "plan", "-input=false", "-detailed-exitcode", "-out=tfplan")
	run(0, "apply", "-input=false", "tfplan")
	if out := run(0, "plan", "-input=false", "-detailed-exitcode"); !strings.Contains(out, "No changes") {
		t.Fatalf("plan after apply:\n%s", out)
	}

	// Import as a user adopts an instance: forget it, import it by project/name, and the plan is empty.
	run(0, "state", "rm", "cp_instance.cli")
	run(0, "import", "-input=false", "cp_instance.cli", testProject+"/tf-cli")
	// The state of an import has no timeouts block (the API knows none), so the plan records the
	// configuration's, and nothing else: no API call, no value "known after apply".
	if out := run(2, "plan", "-input=false", "-detailed-exitcode"); !strings.Contains(out, "0 to add, 1 to change, 0 to destroy") ||
		strings.Contains(out, "known after apply") {
		t.Fatalf("plan after import:\n%s", out)
	}
	run(0, "apply", "-input=false", "-auto-approve")
	if out := run(0, "plan", "-input=false", "-detailed-exitcode"); !strings.Contains(out, "No changes") {
		t.Fatalf("plan after import and apply:\n%s", out)
	}

	// deletion_protection is honoured: destroy fails, and says how to proceed.
	if out := run(1, "destroy", "-input=false", "-auto-approve"); !strings.Contains(out, "deletion_protection") {
		t.Fatalf("destroy of a protected instance:\n%s", out)
	}

	// Someone changes the instance through the API. An apply that skips the refresh sends the version it
	// knew as If-Match: the API answers 412, and the provider says what to do.
	inst, err := apiClient().FindInstanceByName(context.Background(), testProject, "tf-cli")
	if err != nil || inst == nil {
		t.Fatalf("tf-cli not found: %v", err)
	}
	changeOutside(t, inst.ID, "1")
	write(t, filepath.Join(work, "main.tf"), mainTF("8.0", false))
	if out := run(1, "apply", "-input=false", "-auto-approve", "-refresh=false"); !strings.Contains(out, "changed outside Terraform") || !strings.Contains(out, "refresh") {
		t.Fatalf("apply on a stale state:\n%s", out)
	}
	// With the refresh, the same change applies, in place (a major version upgrade, MongoDB's path).
	if out := run(0, "apply", "-input=false", "-auto-approve"); !strings.Contains(out, "1 changed") {
		t.Fatalf("apply after refresh:\n%s", out)
	}
	run(0, "destroy", "-input=false", "-auto-approve")
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
