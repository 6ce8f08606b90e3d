//go:build integration

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// binary returns the blackbox binary under test: BLACKBOX_TEST_BIN (set by
// make test), else one built into a temporary dir.
func binary(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("BLACKBOX_TEST_BIN"); b != "" {
		return b
	}
	out := filepath.Join(t.TempDir(), "blackbox")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build blackbox: %v", err)
	}
	return out
}

type proc struct {
	cmd  *exec.Cmd
	dir  string
	logs *bytes.Buffer
}

// serve starts `blackbox serve` on loopback with a fresh data dir.
func serve(t testing.TB, bin string, env []string, args ...string) *proc {
	return serveIn(t, []string{bin}, env, append([]string{"--listen", "/ip4/127.0.0.1/tcp/0", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"}, args...)...)
}

// serveIn starts `serve` through a command prefix (e.g. a netlab host's nsenter).
func serveIn(t testing.TB, prefix []string, env []string, args ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	var logs bytes.Buffer
	argv := slices.Concat(prefix[1:], []string{"serve", "--data-dir", dir}, args)
	cmd := exec.Command(prefix[0], argv...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, dir: dir, logs: &logs}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve %s did not stop cleanly: %v\n%s", dir, err, logs.String())
			}
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			t.Errorf("serve %s ignored SIGTERM\n%s", dir, logs.String())
		}
		for _, l := range duplicateLogKeys(logs.String()) {
			t.Errorf("serve %s logged a key twice: %s", dir, l)
		}
	})
	return p
}

// duplicateLogKeys returns the log lines (slog's key=value text) of out
// that hold a key twice, as when an attribute is added both by a logger's
// With and by the call.
func duplicateLogKeys(out string) []string {
	var bad []string
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "time=") {
			continue // not a log line (a panic, a job's output)
		}
		seen := map[string]bool{}
		for rest := line; rest != ""; {
			rest = strings.TrimLeft(rest, " ")
			key, after, ok := strings.Cut(rest, "=")
			if !ok || strings.ContainsAny(key, " \"") {
				break
			}
			if seen[key] {
				bad = append(bad, line)
				break
			}
			seen[key] = true
			rest = skipLogValue(after)
		}
	}
	return bad
}

// skipLogValue returns what follows the value at the start of s: a quoted
// string (with backslash escapes) or everything up to the next space.
func skipLogValue(s string) string {
	if !strings.HasPrefix(s, `"`) {
		if i := strings.IndexByte(s, ' '); i >= 0 {
			return s[i:]
		}
		return ""
	}
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return s[i+1:]
		}
	}
	return ""
}

func runCLI(t testing.TB, bin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return errb.String(), err
	}
	return out.String(), nil
}

type status struct {
	PeerID      string   `json:"peer_id"`
	Addrs       []string `json:"addrs"`
	Peers       []string `json:"peers"`
	MetricsAddr string   `json:"metrics_addr"`
}

// metricsAddr is where the node p serves /metrics and /healthz: tests give
// `--metrics-addr 127.0.0.1:0` and read the port the node took.
func metricsAddr(t testing.TB, bin string, p *proc) string {
	t.Helper()
	a := waitStatus(t, bin, p).MetricsAddr
	if a == "" {
		t.Fatalf("node %s serves no metrics", p.dir)
	}
	return a
}

func waitStatus(t testing.TB, bin string, p *proc) status {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := runCLI(t, bin, "status", "--json", "--data-dir", p.dir)
		if err == nil {
			var s status
			if err := json.Unmarshal([]byte(out), &s); err != nil {
				t.Fatalf("status --json: %v\n%s", err, out)
			}
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon never answered: %s\n%s", out, p.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestThreeProcessesFindEachOther runs three real `blackbox serve` processes
// on loopback, joined through a bootstrap address, and expects `blackbox
// market --json` on one to list the other two offers within 30 seconds.
func TestThreeProcessesFindEachOther(t *testing.T) {
	t.Parallel()
	// Sellers offer only what they can run and be paid for: a real
	// containerd and btcd stand behind them. mDNS is off to prove the
	// bootstrap path.
	m := newMarket(t)
	bin := m.bin
	first := m.node(nil, "--log-level", "debug")
	s1 := waitStatus(t, bin, first)
	var boot string
	for _, a := range s1.Addrs {
		if strings.Contains(a, "/tcp/") {
			boot = a
		}
	}
	if boot == "" || s1.PeerID == "" {
		t.Fatalf("status lacks peer_id or a TCP address: %+v", s1)
	}
	second := m.node(nil, "--bootstrap", boot, "--region", "eu")
	third := m.node(nil, "--bootstrap", boot, "--region", "us")
	want := []string{waitStatus(t, bin, second).PeerID, waitStatus(t, bin, third).PeerID}
	slices.Sort(want)

	start := time.Now()
	var got []string
	for time.Since(start) < 30*time.Second {
		out, err := runCLI(t, bin, "market", "--json", "--timeout", "5s", "--data-dir", first.dir)
		if err != nil {
			t.Fatalf("market: %v: %s", err, out)
		}
		var offers []struct {
			Seller string `json:"seller"`
		}
		if err := json.Unmarshal([]byte(out), &offers); err != nil {
			t.Fatalf("market --json is not a JSON array of offers: %v\n%s", err, out)
		}
		got = got[:0]
		for _, o := range offers {
			got = append(got, o.Seller)
		}
		slices.Sort(got)
		if slices.Equal(got, want) {
			break
		}
		time.Sleep(time.Second)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("after 30s market lists %v, want %v\nfirst node log:\n%s", got, want, first.logs.String())
	}
	t.Logf("market found both offers after %s", time.Since(start).Round(time.Millisecond))

	// Filters apply: only the seller in region us.
	out, err := runCLI(t, bin, "market", "--json", "--region", "us", "--data-dir", first.dir)
	if err != nil || !strings.Contains(out, want[slices.Index(want, waitStatus(t, bin, third).PeerID)]) || strings.Contains(out, waitStatus(t, bin, second).PeerID) {
		t.Errorf("market --region us: %v\n%s", err, out)
	}
	// The table form lists them too.
	out, err = runCLI(t, bin, "market", "--data-dir", second.dir)
	if err != nil || !strings.Contains(out, "PER HOUR") || !strings.Contains(out, s1.PeerID) {
		t.Errorf("market table from the second node: %v\n%s", err, out)
	}
	// Without a daemon, market joins for a moment through the bootstrap peer.
	// The sellers' provider records reach the DHT within a few retries.
	all := append(slices.Clone(want), s1.PeerID)
	empty := t.TempDir()
	var b []byte
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(time.Second) {
		cmd := exec.Command(bin, "market", "--json", "--timeout", "5s", "--data-dir", empty)
		cmd.Env = append(append(os.Environ(), m.env...), "BLACKBOX_BOOTSTRAP="+boot)
		b, err = cmd.Output()
		if err == nil && countIn(string(b), all) == len(all) {
			break
		}
	}
	if countIn(string(b), all) != len(all) {
		t.Errorf("daemon-less market lacks offers of %v: %v\n%s", all, err, b)
	}
	// Every node shows its own signed offer.
	out, err = runCLI(t, bin, "offer", "--json", "--data-dir", third.dir)
	if err != nil || !strings.Contains(out, `"envelope"`) || !strings.Contains(out, `"region": "us"`) {
		t.Errorf("offer --json: %v\n%s", err, out)
	}
}

func countIn(s string, ids []string) int {
	n := 0
	for _, id := range ids {
		if strings.Contains(s, id) {
			n++
		}
	}
	return n
}

// TestServeRefusesBadConfig: a config error stops serve with a message that
// names the key, before anything starts.
func TestServeRefusesBadConfig(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	cases := map[string]string{
		"BLACKBOX_OFFER_TTL=5h":               "offer.ttl",
		"BLACKBOX_METER_HOURS=25:00-26:00":    "meter.hours",
		"BLACKBOX_METER_PRICING_CORE_HOUR=-1": "meter.pricing.core_hour",
	}
	for env, key := range cases {
		dir := t.TempDir()
		cmd := exec.Command(bin, "serve", "--data-dir", dir, "--listen", "/ip4/127.0.0.1/tcp/0")
		cmd.Env = append(os.Environ(), env)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), key) {
			t.Errorf("%s: err %v, output %q; want a failure naming %s", env, err, out, key)
		}
		if _, err := os.Stat(filepath.Join(dir, "identity.key")); err == nil {
			t.Errorf("%s: serve created an identity before refusing its config", env)
		}
	}
	out, err := runCLI(t, bin, "serve", "--data-dir", t.TempDir(), "--bootstrap", "/ip4/1.2.3.4/tcp/1")
	if err == nil || !strings.Contains(out, "bootstrap") {
		t.Errorf("bootstrap without peer ID: %v %q", err, out)
	}
}

func TestDuplicateLogKeys(t *testing.T) {
	t.Parallel()
	out := `time=1 level=INFO msg="contract moved" role=seller contract=ab role=seller from=a to=b
time=2 level=INFO msg="a \"quoted\" role=x msg" role=seller err="x=y role=z"
job output with=dup with=dup
time=3 level=INFO msg=plain peer=a peer=b`
	got := duplicateLogKeys(out)
	if len(got) != 2 || !strings.HasPrefix(got[0], "time=1") || !strings.HasPrefix(got[1], "time=3") {
		t.Fatalf("got %q", got)
	}
}
