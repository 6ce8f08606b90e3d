//go:build integration

package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/cli"
	"github.com/blackbox-market/blackbox/internal/health"
	"github.com/blackbox-market/blackbox/internal/node"
	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

// The tests of issue 13's "a doctor that proves it": doctor, status,
// /healthz and serve's payment.required all give one answer to "can this
// node earn", from real btcd regtest nodes and real processes.

// freeLoopbackAddr is a 127.0.0.1 address nothing listens on (freePort):
// for a server to come, or as a btcd that is down.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + freePort(t)
}

// btcdEnv is the environment of a node whose chain source is rpcHost.
func btcdEnv(rpcHost, user, pass string) []string {
	return []string{
		"BLACKBOX_PAYMENT_NETWORK=regtest",
		"BLACKBOX_PAYMENT_RPC_HOST=" + rpcHost,
		"BLACKBOX_PAYMENT_RPC_USER=" + user,
		"BLACKBOX_PAYMENT_RPC_PASS=" + pass,
		"BLACKBOX_PAYMENT_RPC_NOTLS=true",
		"BLACKBOX_MDNS=false",
	}
}

// runEnv runs the blackbox CLI with extra environment and returns stdout,
// stderr and the exit code.
func runEnv(t testing.TB, bin string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// doctorJSON runs `doctor --json` and returns the report, the exit code
// and how long it took.
func doctorJSON(t testing.TB, bin, dir string, env []string) (health.Report, int, time.Duration) {
	t.Helper()
	start := time.Now()
	out, errOut, code := runEnv(t, bin, env, "doctor", "--json", "--data-dir", dir)
	took := time.Since(start)
	var rep health.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("doctor --json: %v\n%s\n%s", err, out, errOut)
	}
	return rep, code, took
}

func check(rep health.Report, name string) health.Check {
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	return health.Check{Name: name, Status: "missing"}
}

// TestDoctorPayments: doctor without a daemon opens the chain source and
// the wallet itself. No btcd: payments fail with the fix, exit 1. btcd
// regtest and the right passphrase: payments, sync and wallet are ok. The
// wrong passphrase: the wallet does not open. The wrong network: payments
// fail.
func TestDoctorPayments(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	dir := t.TempDir()
	pass := "BLACKBOX_WALLET_PASSPHRASE=right horse battery"

	env := append(btcdEnv(freeLoopbackAddr(t), "u", "p"), pass)
	rep, code, took := doctorJSON(t, bin, dir, env)
	c := check(rep, "payments")
	if code != 1 || rep.CanEarn || c.Status != health.Fail || !strings.Contains(c.Detail, "not reachable") || !strings.Contains(c.Fix, "start btcd") {
		t.Fatalf("no btcd: exit %d, payments %+v", code, c)
	}
	t.Logf("doctor, btcd down: %s (payments: %s)", took, c.Detail)
	out, _, _ := runEnv(t, bin, env, "doctor", "--data-dir", dir)
	if !strings.Contains(out, "FAIL  payments") || !strings.Contains(out, "fix: start btcd") || !strings.Contains(out, "This node cannot earn") {
		t.Errorf("doctor's text, btcd down:\n%s", out)
	}

	h := btcdtest.Start(t, 1)
	env = append(btcdEnv(h.RPCHost, h.RPCUser, h.RPCPass), pass)
	rep, _, took = doctorJSON(t, bin, dir, env)
	if c := check(rep, "payments"); c.Status != health.OK || !strings.Contains(c.Detail, "on regtest") {
		t.Errorf("btcd up: payments %+v", c)
	}
	if c := check(rep, "wallet"); c.Status != health.Warn || !strings.Contains(c.Detail, "no wallet") {
		t.Errorf("no wallet yet: %+v", c)
	}
	t.Logf("doctor, btcd up, no wallet: %s", took)
	if out, errOut, code := runEnv(t, bin, env, "wallet", "create", "--data-dir", dir); code != 0 {
		t.Fatalf("wallet create: %s %s", out, errOut)
	}
	rep, _, took = doctorJSON(t, bin, dir, env)
	for _, name := range []string{"payments", "chain sync", "wallet", "clock"} {
		if c := check(rep, name); c.Status != health.OK {
			t.Errorf("btcd up, right passphrase: %s %+v", name, c)
		}
	}
	t.Logf("doctor, btcd up, wallet opened: %s", took)

	wrong := append(btcdEnv(h.RPCHost, h.RPCUser, h.RPCPass), "BLACKBOX_WALLET_PASSPHRASE=wrong")
	rep, code, _ = doctorJSON(t, bin, dir, wrong)
	if c := check(rep, "wallet"); code != 1 || c.Status != health.Fail || !strings.Contains(c.Detail, "does not open") || c.Fix == "" {
		t.Errorf("wrong passphrase: exit %d, wallet %+v", code, c)
	}

	network := append(env, "BLACKBOX_PAYMENT_NETWORK=testnet")
	rep, code, _ = doctorJSON(t, bin, dir, network)
	if c := check(rep, "payments"); code != 1 || c.Status != health.Fail || !strings.Contains(c.Detail, "follows regtest, but payment.network is testnet") {
		t.Errorf("wrong network: exit %d, payments %+v", code, c)
	}
}

// TestServePaymentRequired: with payment.required, serve exits non-zero at
// once with the reason when payments cannot start, so systemd shows the
// unit failed; under systemd (SYSTEMD_EXEC_PID is serve's own pid) "auto"
// means required.
func TestServePaymentRequired(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	down := btcdEnv(freeLoopbackAddr(t), "u", "p")
	for _, tc := range []struct {
		name   string
		env    []string
		shell  bool // through sh, setting SYSTEMD_EXEC_PID to serve's pid
		reason string
	}{
		{"btcd down", append(down, "BLACKBOX_PAYMENT_REQUIRED=true", "BLACKBOX_WALLET_PASSPHRASE=x"), false, "btcd is not reachable"},
		{"no passphrase", append(down, "BLACKBOX_PAYMENT_REQUIRED=true", "BLACKBOX_WALLET_PASSPHRASE="), false, "no wallet passphrase"},
		{"auto under systemd", append(down, "BLACKBOX_WALLET_PASSPHRASE=x"), true, "btcd is not reachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			argv := []string{bin, "serve", "--data-dir", t.TempDir(), "--listen", "/ip4/127.0.0.1/tcp/0"}
			var cmd *exec.Cmd
			if tc.shell {
				cmd = exec.Command("sh", "-c", `SYSTEMD_EXEC_PID=$$ exec "$@"`, "sh")
				cmd.Args = append(cmd.Args, argv...)
			} else {
				cmd = exec.Command(argv[0], argv[1:]...)
			}
			cmd.Env = append(os.Environ(), tc.env...)
			var logs bytes.Buffer
			cmd.Stdout, cmd.Stderr = &logs, &logs
			start := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			var err error
			select {
			case err = <-done:
			case <-time.After(60 * time.Second):
				cmd.Process.Signal(syscall.SIGTERM)
				<-done
				t.Fatalf("serve kept running without payments:\n%s", logs.String())
			}
			took := time.Since(start)
			if err == nil || !strings.Contains(logs.String(), "payment.required") || !strings.Contains(logs.String(), tc.reason) {
				t.Fatalf("serve: %v, want a non-zero exit saying %q:\n%s", err, tc.reason, logs.String())
			}
			t.Logf("serve exited (%v) after %s: %s", err, took, lastLine(logs.String()))
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// getHealthz fetches /healthz.
func getHealthz(t testing.TB, addr string) (int, health.Report) {
	t.Helper()
	var rep health.Report
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatalf("/healthz: %v\n%s", err, body)
	}
	return resp.StatusCode, rep
}

// TestPaymentsDownEverywhere: a node whose btcd is down runs (payment.required
// false) but cannot earn, and says so alike in /healthz (503 with the
// reason), `status` (Can earn: no) and `doctor` (payments FAIL, exit 1),
// which asks the running daemon.
func TestPaymentsDownEverywhere(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	p := serve(t, bin, append(btcdEnv(freeLoopbackAddr(t), "u", "p"), "BLACKBOX_WALLET_PASSPHRASE=x", "BLACKBOX_PAYMENT_REQUIRED=false"),
		"--metrics-addr", "127.0.0.1:0")
	metrics := metricsAddr(t, bin, p)

	code, rep := getHealthz(t, metrics)
	hc := check(rep, "payments")
	if code != http.StatusServiceUnavailable || rep.CanEarn || hc.Status != health.Fail || !strings.Contains(hc.Detail, "not reachable") {
		t.Fatalf("/healthz: %d %+v", code, rep)
	}
	// Payments are not off: the node keeps trying btcd (chainsource.go),
	// and the reason is the live check's.
	if len(rep.Reasons) == 0 || !strings.Contains(strings.Join(rep.Reasons, "\n"), "payments: btcd is not reachable") {
		t.Errorf("/healthz reasons: %v", rep.Reasons)
	}

	out, err := runCLI(t, bin, "status", "--data-dir", p.dir)
	if err != nil || !strings.Contains(out, "Can earn:") || !strings.Contains(out, "no: ") || !strings.Contains(out, hc.Detail) {
		t.Errorf("status: %v\n%s", err, out)
	}
	drep, dcode, took := doctorJSON(t, bin, p.dir, nil)
	dc := check(drep, "payments")
	if dcode != 1 || drep.CanEarn || dc != hc {
		t.Errorf("doctor disagrees with the daemon: exit %d, payments %+v, /healthz %+v", dcode, dc, hc)
	}
	// Every reason status gives, doctor gives too.
	for _, r := range rep.Reasons {
		found := false
		for _, d := range drep.Reasons {
			found = found || d == r
		}
		if !found {
			t.Errorf("status says %q, doctor does not: %v", r, drep.Reasons)
		}
	}
	t.Logf("doctor with a daemon: %s\nstatus:\n%s", took, out)
}

// TestHealthzUp: a fully working node (containerd, btcd regtest, wallet)
// answers /healthz 200, status says it can earn, and doctor agrees (exit 0).
func TestHealthzUp(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	d := m.daemon(nil, "--metrics-addr", "127.0.0.1:0")
	metrics := metricsAddr(t, m.bin, d.proc)
	code, rep := getHealthz(t, metrics)
	if code != http.StatusOK || !rep.CanEarn {
		t.Fatalf("/healthz: %d %+v", code, rep)
	}
	out, err := d.cli("status")
	if err != nil || !strings.Contains(out, "Can earn:") || !strings.Contains(out, "yes") || !strings.Contains(out, "Dashboard:") {
		t.Errorf("status: %v\n%s", err, out)
	}
	// status --json says what the text says: can it earn, and the
	// earnings, for scripts.
	out, err = d.cli("status", "--json")
	var js struct {
		DashboardURL string         `json:"dashboard_url"`
		Health       *health.Report `json:"health"`
		Earnings     *struct {
			Today struct {
				NetSat *int64 `json:"net_sat"`
			} `json:"today"`
		} `json:"earnings"`
	}
	if err != nil || json.Unmarshal([]byte(out), &js) != nil || js.Health == nil || !js.Health.CanEarn ||
		js.Earnings == nil || js.Earnings.Today.NetSat == nil || !strings.HasPrefix(js.DashboardURL, "http://127.0.0.1:") {
		t.Errorf("status --json: %v\n%s", err, out)
	}
	drep, dcode, took := doctorJSON(t, m.bin, d.dir, m.env)
	if dcode != 0 || !drep.CanEarn {
		t.Errorf("doctor: exit %d %+v", dcode, drep)
	}
	text, _, _ := runEnv(t, m.bin, m.env, "doctor", "--data-dir", d.dir)
	t.Logf("doctor on a working node: %s\n%s", took, text)
	d.stop()
}

// TestServiceUnit: deploy/blackbox.service is a unit systemd accepts
// (systemd-analyze verify, no warning), hands the passphrase over as the
// credential the node reads, orders btcd before the node, and restarts a
// node that failed.
func TestServiceUnit(t *testing.T) {
	t.Parallel()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian's systemd package)")
	}
	raw, err := os.ReadFile("../../deploy/blackbox.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(raw)
	for _, want := range []string{
		"LoadCredential=" + node.CredentialName + ":", "EnvironmentFile=-", "After=network-online.target containerd.service btcd.service",
		"Wants=network-online.target containerd.service btcd.service", "Restart=on-failure", "StateDirectory=blackbox",
		"--data-dir " + cli.ServiceDataDir,
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	// No setting that gives the node a mount namespace of its own: the
	// jobs' scratch tmpfs it mounts must be containerd's (sandbox/mountns.go).
	for _, bad := range []string{"PrivateTmp=", "ProtectSystem=", "ProtectHome=", "ReadOnlyPaths=", "ReadWritePaths=", "InaccessiblePaths=",
		"TemporaryFileSystem=", "BindPaths=", "BindReadOnlyPaths=", "PrivateDevices=", "PrivateMounts=", "MountFlags=", "RootDirectory=", "ProtectKernelTunables="} {
		for _, line := range strings.Split(unit, "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), bad) {
				t.Errorf("the unit sets %q: a mount namespace of its own hides the jobs' scratch tmpfs from containerd", line)
			}
		}
	}
	// Verified with the binary under test in ExecStart's place.
	dir := t.TempDir()
	path := dir + "/blackbox.service"
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/local/bin/blackbox", binary(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
