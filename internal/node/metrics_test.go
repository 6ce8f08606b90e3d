package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// describer records what newMetrics registers.
type describer struct{ cs []prometheus.Collector }

func (d *describer) Register(c prometheus.Collector) error { d.cs = append(d.cs, c); return nil }
func (d *describer) MustRegister(cs ...prometheus.Collector) {
	d.cs = append(d.cs, cs...)
}
func (d *describer) Unregister(prometheus.Collector) bool { return false }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// registeredNames are the blackbox_ series newMetrics registers, sorted.
func registeredNames(t *testing.T) []string {
	d := &describer{}
	newMetrics(d, &Node{})
	ch := make(chan *prometheus.Desc, 1000)
	for _, c := range d.cs {
		c.Describe(ch)
	}
	close(ch)
	var names []string
	for desc := range ch {
		m := fqName.FindStringSubmatch(desc.String())
		if m == nil {
			t.Fatalf("no name in %s", desc)
		}
		if strings.HasPrefix(m[1], "blackbox_") {
			names = append(names, m[1])
		}
	}
	slices.Sort(names)
	return names
}

var docRow = regexp.MustCompile("(?m)^\\| `(blackbox_[a-z_]+)` \\|")

// TestMetricsDocumented: docs/metrics.md lists exactly the registered
// blackbox_ series, so neither can drift from the other.
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, m := range docRow.FindAllStringSubmatch(string(doc), -1) {
		documented = append(documented, m[1])
	}
	slices.Sort(documented)
	got := registeredNames(t)
	if !slices.Equal(got, documented) {
		t.Fatalf("registered series and docs/metrics.md differ:\nregistered: %v\ndocumented: %v", got, documented)
	}
	if len(got) < 20 {
		t.Fatalf("%d series", len(got))
	}
}

// TestMetricsOfAnIdleNode: a node with nothing up (no host, no meter, no
// payments) still serves its metrics, and they pass Prometheus's lint.
func TestMetricsOfAnIdleNode(t *testing.T) {
	reg := prometheus.NewRegistry()
	newMetrics(reg, &Node{version: "test"})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"blackbox_build_info", "blackbox_selling", "blackbox_payments_up", "go_goroutines", "process_cpu_seconds_total"} {
		if !names[want] {
			t.Errorf("no %s", want)
		}
	}
}

// lintBlackbox returns promlint's problems with the blackbox_ series of a
// scrape (libp2p's own are not ours to fix).
func lintBlackbox(t *testing.T, body string) []promlint.Problem {
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	var out []promlint.Problem
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "blackbox_") {
			out = append(out, p)
		}
	}
	return out
}

var seriesName = regexp.MustCompile(`\bblackbox_[a-z_]+`)

// TestGrafanaDashboard: deploy/grafana/blackbox.json is a dashboard whose
// queries name only series the node serves, with a row repeated per node.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("../../deploy/grafana/blackbox.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Repeat  string `json:"repeat"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("blackbox.json: %v", err)
	}
	known := registeredNames(t)
	ids := map[int]bool{}
	repeated, exprs := false, 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		repeated = repeated || p.Type == "row" && p.Repeat == "instance"
		for _, tg := range p.Targets {
			exprs++
			for _, name := range seriesName.FindAllString(tg.Expr, -1) {
				base := name
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if s, ok := strings.CutSuffix(name, suf); ok && slices.Contains(known, s) {
						base = s
					}
				}
				if !slices.Contains(known, base) {
					t.Errorf("panel %q queries %s, which the node does not serve", p.Title, name)
				}
			}
		}
	}
	if d.UID == "" || !repeated || exprs < 20 {
		t.Fatalf("uid %q, a row repeated per instance %v, %d queries", d.UID, repeated, exprs)
	}
}

// BenchmarkScrapeContracts is what the contract records cost a scrape: a
// seller that kept 2,000 contracts, each with a 1 KiB contract and receipt
// and a full history, in the real database.
func BenchmarkScrapeContracts(b *testing.B) {
	db, err := store.Open(filepath.Join(b.TempDir(), DBFile), time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	mc := contract.NewMachine(store.NewContractStore(db), contract.Timeouts{}, nil, nil)
	blob := bytes.Repeat([]byte{7}, 1024)
	for i := range 2_000 {
		r := &contract.Record{ID: fmt.Sprintf("%064x", i), Role: contract.RoleSeller, State: contract.StateSettled,
			Contract: blob, Receipt: blob, Paid: 1401, Intervals: 2,
			History: make([]contract.Step, 6), Proposal: &contract.Proposal{Request: contract.Request{Image: "sha256:" + strings.Repeat("a", 64)}}}
		if err := mc.Create(r); err != nil {
			b.Fatal(err)
		}
	}
	c := &stateCollector{n: &Node{}}
	ch := make(chan prometheus.Metric, 1000)
	go func() {
		for range ch {
		}
	}()
	b.ResetTimer()
	for range b.N {
		c.collectContracts(ch, mc)
	}
	close(ch)
}
