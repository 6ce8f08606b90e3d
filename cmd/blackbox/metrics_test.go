//go:build integration

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
)

// The metrics tests use Debian's real Prometheus (the `prometheus` package,
// which deploy/dev/deps.sh installs): promtool checks deploy/prometheus, and
// a private Prometheus server scrapes real nodes.

// promBin finds a Prometheus binary (prometheus or promtool); CI must have it.
func promBin(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (Debian's prometheus package; deploy/dev/deps.sh installs it)", name)
		}
		t.Skipf("%s not installed: apt-get install prometheus (deploy/dev/deps.sh)", name)
	}
	return p
}

var repoDeploy = filepath.Join("..", "..", "deploy")

// TestPrometheusDeployChecks: `promtool check config` and `promtool check
// rules` accept deploy/prometheus, and the alerts pass their unit tests
// (`promtool test rules`).
func TestPrometheusDeployChecks(t *testing.T) {
	t.Parallel()
	promtool := promBin(t, "promtool")
	for _, args := range [][]string{
		{"check", "config", filepath.Join(repoDeploy, "prometheus", "prometheus.yml")},
		{"check", "rules", filepath.Join(repoDeploy, "prometheus", "alerts.yml")},
		// Each alert fires for the node it should, after its `for`, and
		// for no other.
		{"test", "rules", filepath.Join(repoDeploy, "prometheus", "alerts_test.yml")},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// prom is a private Prometheus server a test started.
type prom struct {
	t    *testing.T
	addr string
}

// startPrometheus runs Debian's prometheus on a free port with its own
// storage in a temporary dir, scraping targets every second and evaluating
// deploy/prometheus/alerts.yml; the test's cleanup stops it.
func startPrometheus(t *testing.T, targets []string) *prom {
	t.Helper()
	bin := promBin(t, "prometheus")
	dir := t.TempDir()
	rules, err := filepath.Abs(filepath.Join(repoDeploy, "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	quoted := make([]string, len(targets))
	for i, tg := range targets {
		quoted[i] = strconv.Quote(tg)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: blackbox
    static_configs:
      - targets: [%s]
`, rules, strings.Join(quoted, ", "))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &prom{t: t, addr: freeLoopbackAddr(t)}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+p.addr)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", tail(logs.String(), 40))
		}
	})
	waitFor(t, 60*time.Second, "prometheus to be ready", func() bool {
		resp, err := http.Get("http://" + p.addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// api GETs a Prometheus HTTP API path and decodes its data.
func (p *prom) api(path string, q url.Values, data any) error {
	resp, err := http.Get("http://" + p.addr + path + "?" + q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return err
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s", path, r.Error)
	}
	return json.Unmarshal(r.Data, data)
}

// sample is one element of an instant vector.
type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s sample) float(t *testing.T) float64 {
	v, err := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
	if err != nil {
		t.Fatalf("sample %v: %v", s, err)
	}
	return v
}

// query runs an instant PromQL query.
func (p *prom) query(q string) ([]sample, error) {
	var d struct {
		ResultType string   `json:"resultType"`
		Result     []sample `json:"result"`
	}
	if err := p.api("/api/v1/query", url.Values{"query": {q}}, &d); err != nil {
		return nil, err
	}
	if d.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: result type %s", q, d.ResultType)
	}
	return d.Result, nil
}

// scalarEventually waits until q returns one sample equal to want.
func (p *prom) scalarEventually(q string, want float64) {
	t := p.t
	t.Helper()
	var last []sample
	var lastErr error
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		last, lastErr = p.query(q)
		if lastErr == nil && len(last) == 1 && last[0].float(t) == want {
			t.Logf("%s = %v", q, want)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: %v (err %v), want %v", q, last, lastErr, want)
}

// earnedKey is the key of the seller's earnings by state (money fields end
// in _sat or _sats).
var earnedKey = regexp.MustCompile(`^earned_sats?$`)

// earnedOf sums what `blackbox contracts --json` says a seller earned.
func earnedOf(t *testing.T, d *daemon) int64 {
	t.Helper()
	out, err := d.cli("contracts", "--json")
	if err != nil {
		t.Fatalf("contracts --json: %v: %s", err, out)
	}
	var v map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("contracts --json: %v\n%s", err, out)
	}
	var total int64
	for k, raw := range v {
		if !earnedKey.MatchString(k) {
			continue
		}
		var m map[string]int64
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("contracts --json %s: %v", k, err)
		}
		for _, n := range m {
			total += n
		}
	}
	return total
}

// TestPrometheusScrapesAFleet: three real nodes (two sellers and a buyer,
// btcd regtest, containerd) serve metrics; a real Prometheus scrapes them
// while a job runs. The fleet's total earnings in PromQL is what `blackbox
// contracts --json` says the seller earned; after the channel closes on
// chain the money shows as settled and the close fee as paid. Every alert
// rule of deploy/prometheus evaluates without error, every query of the
// Grafana dashboard runs, and promtool's lint passes the blackbox series
// of a real scrape.
func TestPrometheusScrapesAFleet(t *testing.T) {
	t.Parallel()
	promBin(t, "prometheus")
	promtool := promBin(t, "promtool")
	m := newMarket(t)
	work := t.TempDir()
	var sellers []*daemon
	for i := range 2 {
		addr, _ := payoutAddress(t)
		args := []string{"--metrics-addr", "127.0.0.1:0"}
		if i > 0 {
			args = append(args, "--bootstrap", sellers[0].bootAddr())
		}
		sellers = append(sellers, m.daemon(sellerEnv("BLACKBOX_PAYMENT_PAYOUT_ADDRESS="+addr), args...))
	}
	buyer := m.daemon(buyerEnv, "--metrics-addr", "127.0.0.1:0", "--bootstrap", sellers[0].bootAddr())
	// Each node's metrics port, as the node resolved its ":0" (a port
	// picked free beforehand may be taken by then).
	var metricsAddrs []string
	for _, d := range append(sellers, buyer) {
		metricsAddrs = append(metricsAddrs, metricsAddr(t, d.m.bin, d.proc))
	}
	p := startPrometheus(t, metricsAddrs)
	p.scalarEventually(`sum(up{job="blackbox"})`, 3)
	p.scalarEventually(`sum(blackbox_selling)`, 3) // the buyer could sell; it offers nothing
	p.scalarEventually(`sum(blackbox_payments_up)`, 3)

	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 2)
	j := submit(t, buyer, busybox(t, work), filepath.Join(work, "results"), jobFlags, "sh", "-c", "echo hello; sleep 3")
	if j.State != contract.JobDone || j.Paid <= 0 {
		t.Fatalf("job %s: %s, paid %d: %s", j.ID, j.State, j.Paid, j.Error)
	}
	seller := sellerOf(t, j.Seller.String(), sellers...)
	var earned int64
	for _, s := range sellers {
		earned += earnedOf(t, s)
	}
	if earned != j.Paid {
		t.Fatalf("the sellers' contracts say they earned %d sats; the buyer paid %d", earned, j.Paid)
	}
	// The fleet's total earnings, and where the money is: in the open
	// channel, for a contract that ended.
	p.scalarEventually(`sum(blackbox_earned_sats)`, float64(earned))
	p.scalarEventually(`sum(blackbox_earned_sats{state="channel"})`, float64(earned))
	p.scalarEventually(`sum(blackbox_channel_paid_sats{role="buyer"})`, float64(j.Paid))
	p.scalarEventually(`sum(blackbox_contracts{role="seller",state="settled"})`, 1)
	p.scalarEventually(`sum(blackbox_jobs{state="done"})`, 1)
	for _, phase := range []string{"fund", "transfer", "pay", "start", "run", "results"} {
		p.scalarEventually(`sum(blackbox_job_phase_duration_seconds_count{role="seller",phase="`+phase+`"})`, 1)
	}
	for _, phase := range []string{"discover", "negotiate", "fund", "transfer", "run", "results"} {
		p.scalarEventually(`sum(blackbox_job_phase_duration_seconds_count{role="buyer",phase="`+phase+`"}) > bool 0`, 1)
	}
	if run, err := p.query(`sum(blackbox_job_phase_duration_seconds_sum{role="seller",phase="run"})`); err != nil || len(run) != 1 || run[0].float(t) < 3 {
		t.Errorf("the seller's run phase (the job sleeps 3 s): %v, %v", run, err)
	}

	// Closed on chain: the money is settled and the close fee paid.
	ch := seller.channelWith(buyer.peerID())
	m.closeOnChain(seller, ch, j.Paid)
	p.scalarEventually(`sum(blackbox_earned_sats{state="settled"})`, float64(earned))
	p.scalarEventually(`sum(blackbox_earned_sats)`, float64(earned))
	p.scalarEventually(`sum(blackbox_fees_paid_sats_total)`, float64(ch.CloseFee))

	// The alert rules evaluate without error against real series.
	var rules struct {
		Groups []struct {
			Rules []struct {
				Name           string `json:"name"`
				Health         string `json:"health"`
				LastError      string `json:"lastError"`
				LastEvaluation string `json:"lastEvaluation"`
			} `json:"rules"`
		} `json:"groups"`
	}
	waitFor(t, 30*time.Second, "every alert rule evaluated", func() bool {
		if err := p.api("/api/v1/rules", nil, &rules); err != nil {
			return false
		}
		n := 0
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				if r.Health != "ok" && r.Health != "err" {
					return false
				}
				n++
			}
		}
		return n >= 5
	})
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Health != "ok" {
				t.Errorf("alert %s: %s %s", r.Name, r.Health, r.LastError)
			}
		}
	}

	// Every query of the Grafana dashboard runs, for one node and for all.
	b, err := os.ReadFile(filepath.Join(repoDeploy, "grafana", "blackbox.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$instance", metricsAddrs[0], "$__rate_interval", "1m")
	for _, pn := range dash.Panels {
		for _, tg := range pn.Targets {
			if _, err := p.query(vars.Replace(tg.Expr)); err != nil {
				t.Errorf("dashboard panel %q: %v", pn.Title, err)
			}
		}
	}

	// promtool's lint of a real scrape: nothing to say about blackbox_.
	start := time.Now()
	resp, err := http.Get("http://" + metricsAddrs[0] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("one scrape of a seller: %s, %d bytes", time.Since(start).Round(time.Microsecond), len(body))
	lint := exec.Command(promtool, "check", "metrics")
	lint.Stdin = bytes.NewReader(body)
	out, _ := lint.CombinedOutput() // libp2p's own series have lint of their own
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "blackbox_") {
			t.Errorf("promtool check metrics: %s", line)
		}
	}
	if testing.Verbose() {
		var own []string
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "blackbox_") {
				own = append(own, line)
			}
		}
		t.Logf("the seller's blackbox_ series:\n%s", strings.Join(own, "\n"))
	}
	if !bytes.Contains(body, []byte("go_goroutines")) || !bytes.Contains(body, []byte("process_cpu_seconds_total")) {
		t.Error("no Go or process metrics in the scrape")
	}
}
