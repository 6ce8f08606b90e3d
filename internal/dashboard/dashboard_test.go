package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/health"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/meter"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// fakeNode serves fixed data and keeps the policy it is given, validated
// by the real meter rules.
type fakeNode struct {
	cfg meter.Config
	set int
}

func (f *fakeNode) Status(context.Context) (api.Status, error) {
	return api.Status{Version: "test", Selling: true}, nil
}
func (f *fakeNode) Offer(context.Context) (api.Offer, error) {
	return api.Offer{}, fmt.Errorf("%w: nothing measured yet", api.ErrNotFound)
}
func (f *fakeNode) Contracts(context.Context) (api.Contracts, error) {
	return api.Contracts{Contracts: []*contract.Record{{ID: "c1", Role: contract.RoleSeller, State: contract.StateSettled, Paid: 4200,
		Ended: time.Now(), Updated: time.Now()}}, Rejections: map[string]uint64{"capacity": 3}}, nil
}
func (f *fakeNode) Channels(context.Context) ([]*payment.Channel, error) {
	return []*payment.Channel{{ID: "tx:0", Role: payment.RoleSeller, State: payment.StateOpen, Capacity: 100000, Paid: 4200, CloseFee: 300}}, nil
}
func (f *fakeNode) WalletBalance(context.Context, int32) (api.Balance, error) {
	return api.Balance{}, fmt.Errorf("%w: payments are off", api.ErrUnavailable)
}
func (f *fakeNode) Earnings(_ context.Context, since time.Duration) (api.Earnings, error) {
	now := time.Now()
	return api.Earnings{Now: now, Since: now.Add(-since), BucketSeconds: 300, Today: api.EarningsTotals{NetSat: 4200},
		Buckets: []api.EarningsBucket{{Start: now.Truncate(5 * time.Minute), EarnedSat: 4200, SoldMilliCPU: 1000}}}, nil
}
func (f *fakeNode) Health(context.Context) (health.Report, error) {
	return health.NewReport([]health.Check{{Name: health.NameReach, Status: health.Warn, Detail: "loopback only"}}), nil
}
func (f *fakeNode) Scores(context.Context) ([]reputation.Score, error) { return nil, nil }
func (f *fakeNode) Score(context.Context, peer.ID) (reputation.Score, error) {
	return reputation.Score{}, nil
}
func (f *fakeNode) Config(context.Context) (api.ConfigView, error) {
	return api.ConfigView{Policy: api.PolicyOf(f.cfg)}, nil
}
func (f *fakeNode) SetPolicy(ctx context.Context, p api.Policy) (api.ConfigView, error) {
	next := p.Apply(f.cfg)
	if err := next.Validate(); err != nil {
		return api.ConfigView{}, fmt.Errorf("%w: %w", api.ErrBadRequest, err)
	}
	f.cfg = next
	f.set++
	return f.Config(ctx)
}

const testToken = "0123456789abcdef0123456789abcdef0123456789abcdef"

func do(h http.Handler, method, target, remote string, body string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.RemoteAddr = remote
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestAccessRule(t *testing.T) {
	h := Handler(&fakeNode{cfg: meter.DefaultConfig()}, testToken, NewLogRing(10), nil)
	for _, c := range []struct {
		name, target, remote string
		hdr                  map[string]string
		want                 int
	}{
		{"loopback client, loopback host", "http://127.0.0.1:7461/api/overview", "127.0.0.1:5000", nil, 200},
		{"loopback client, localhost", "http://localhost:7461/", "[::1]:5000", nil, 200},
		{"loopback client, foreign host name (DNS rebinding)", "http://evil.example:7461/api/overview", "127.0.0.1:5000", nil, 401},
		{"remote client, no token", "http://192.0.2.1:7461/api/overview", "198.51.100.7:5000", nil, 401},
		{"remote client, wrong bearer", "http://192.0.2.1:7461/api/overview", "198.51.100.7:5000", map[string]string{"Authorization": "Bearer nope"}, 401},
		{"remote client, bearer", "http://192.0.2.1:7461/api/overview", "198.51.100.7:5000", map[string]string{"Authorization": "Bearer " + testToken}, 200},
		{"remote client, cookie", "http://192.0.2.1:7461/api/overview", "198.51.100.7:5000", map[string]string{"Cookie": cookieName + "=" + testToken}, 200},
		{"remote client, wrong token in URL", "http://192.0.2.1:7461/?token=nope", "198.51.100.7:5000", nil, 401},
	} {
		if w := do(h, "GET", c.target, c.remote, "", c.hdr); w.Code != c.want {
			t.Errorf("%s: %d, want %d: %s", c.name, w.Code, c.want, w.Body.String())
		}
	}
	// ?token= sets the cookie and redirects to the URL without it.
	w := do(h, "GET", "http://192.0.2.1:7461/?since=24h&token="+testToken, "198.51.100.7:5000", "", nil)
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/?since=24h" {
		t.Fatalf("?token=: %d to %q", w.Code, w.Header().Get("Location"))
	}
	ck := w.Result().Cookies()
	if len(ck) != 1 || ck[0].Value != testToken || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie %+v", ck)
	}
}

func TestPolicyChange(t *testing.T) {
	f := &fakeNode{cfg: meter.DefaultConfig()}
	h := Handler(f, testToken, nil, nil)
	local := "127.0.0.1:5000"
	json := map[string]string{"Content-Type": "application/json"}
	good := `{"pricing":{"core_hour":42,"memory_gib_hour":3,"disk_gib_hour":0.1,"egress_gib":50,"start_fee":10},
		"reserve":{"cpu":"1","memory":"1GiB","disk":"10GiB"},"max":{},"hours":"22:00-07:00","days":"mon-fri","timezone":"UTC"}`

	// Not JSON, or from another site: refused, nothing changes.
	for name, hdr := range map[string]map[string]string{
		"form post":      {"Content-Type": "application/x-www-form-urlencoded"},
		"other origin":   {"Content-Type": "application/json", "Origin": "http://evil.example"},
		"cross-site":     {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
		"remote no auth": nil,
	} {
		remote := local
		if name == "remote no auth" {
			remote, hdr = "198.51.100.7:5000", json
		}
		if w := do(h, "PUT", "http://127.0.0.1:7461/api/policy", remote, good, hdr); w.Code != http.StatusForbidden && w.Code != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 403 or 401", name, w.Code)
		}
	}
	if f.set != 0 {
		t.Fatalf("a refused request changed the policy")
	}

	// Bad values: 400 with a message per field, nothing changes.
	bad := strings.Replace(strings.Replace(good, `"core_hour":42`, `"core_hour":-1`, 1), `"memory":"1GiB"`, `"memory":"lots"`, 1)
	bad = strings.Replace(bad, `"hours":"22:00-07:00"`, `"hours":"25:00-26:00"`, 1)
	w := do(h, "PUT", "http://127.0.0.1:7461/api/policy", local, bad,
		map[string]string{"Content-Type": "application/json", "Origin": "http://127.0.0.1:7461", "Sec-Fetch-Site": "same-origin"})
	var er errorReply
	if err := decode(w, &er); err != nil || w.Code != http.StatusBadRequest {
		t.Fatalf("bad policy: %d %v %s", w.Code, err, w.Body.String())
	}
	for _, k := range []string{"meter.pricing.core_hour", "meter.reserve.memory", "meter.hours"} {
		if er.Fields[k] == "" {
			t.Errorf("no message for %s in %v", k, er.Fields)
		}
	}
	if f.set != 0 || f.cfg.Pricing.CoreHour != 20 {
		t.Fatalf("a bad policy changed it: %+v", f.cfg.Pricing)
	}
	// Unknown keys are refused too.
	if w := do(h, "PUT", "http://127.0.0.1:7461/api/policy", local, `{"pricing":{"core_hours":1}}`, json); w.Code != http.StatusBadRequest {
		t.Errorf("unknown key: %d", w.Code)
	}

	// A good one is applied.
	w = do(h, "PUT", "http://127.0.0.1:7461/api/policy", local, good, json)
	var v api.ConfigView
	if err := decode(w, &v); err != nil || w.Code != 200 || v.Policy.Pricing.CoreHour != 42 || f.cfg.Hours != "22:00-07:00" {
		t.Fatalf("good policy: %d %v %+v", w.Code, err, v.Policy)
	}
}

func TestOverview(t *testing.T) {
	h := Handler(&fakeNode{cfg: meter.DefaultConfig()}, testToken, nil, nil)
	w := do(h, "GET", "http://127.0.0.1:7461/api/overview", "127.0.0.1:5000", "", nil)
	var o Overview
	if err := decode(w, &o); err != nil {
		t.Fatal(err)
	}
	if o.Earnings == nil || o.Earnings.Today.NetSat != 4200 || len(o.Earnings.Buckets) != 1 {
		t.Fatalf("earnings %+v", o.Earnings)
	}
	if o.Health == nil || o.Health.CanEarn != true || len(o.Health.Checks) != 1 {
		t.Fatalf("health %+v", o.Health)
	}
	if len(o.Contracts) != 1 || o.Contracts[0].State != "settled" || o.Contracts[0].PaidSat != 4200 {
		t.Fatalf("contracts %+v", o.Contracts)
	}
	if len(o.Channels) != 1 || o.Channels[0].CloseFeeSat != 300 || o.Channels[0].AfterCloseSat != 3900 {
		t.Fatalf("channels %+v", o.Channels)
	}
	if o.Off["wallet"] == "" || len(o.Errors) != 0 || o.Rejections["capacity"] != 3 {
		t.Fatalf("errors %v, rejections %v", o.Errors, o.Rejections)
	}
	// The page and its script are served from the binary.
	for _, p := range []string{"/", "/app.js", "/style.css"} {
		if w := do(h, "GET", "http://127.0.0.1:7461"+p, "127.0.0.1:5000", "", nil); w.Code != 200 || w.Body.Len() == 0 {
			t.Errorf("GET %s: %d", p, w.Code)
		}
	}
}

func decode(w *httptest.ResponseRecorder, v any) error {
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		return errors.New("content type " + ct)
	}
	return json.NewDecoder(w.Body).Decode(v)
}

func TestToken(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreateToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, TokenFile))
	if err != nil || st.Mode().Perm() != 0o600 || len(a) != 64 {
		t.Fatalf("token file %v %v, token %q", st.Mode(), err, a)
	}
	if b, err := LoadOrCreateToken(dir); err != nil || b != a {
		t.Fatalf("second load %q %v, want the same token", b, err)
	}
}

func TestListenRule(t *testing.T) {
	for _, c := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{Addr: "127.0.0.1:0"}, true},
		{Config{Addr: "localhost:7461"}, true},
		{Config{Addr: "[::1]:7461"}, true},
		{Config{Addr: "0.0.0.0:7461"}, false},
		{Config{Addr: ":7461"}, false},
		{Config{Addr: "0.0.0.0:7461", AllowHTTP: true}, true},
		{Config{Addr: "0.0.0.0:7461", TLSCert: "c.pem", TLSKey: "k.pem"}, true},
		{Config{Addr: "0.0.0.0:7461", TLSCert: "c.pem"}, false},
		{Config{Addr: "7461"}, false},
		{Config{}, true},
	} {
		if err := c.cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: %v", c.cfg, err)
		}
	}
}

func TestLogRing(t *testing.T) {
	r := NewLogRing(3)
	for i := range 5 {
		fmt.Fprintf(r, "line %d\n", i)
	}
	got := r.After(0)
	if len(got) != 3 || got[0].Text != "line 2" || got[2].Seq != 5 {
		t.Fatalf("%+v", got)
	}
	if got := r.After(4); len(got) != 1 || got[0].Text != "line 4" {
		t.Fatalf("after 4: %+v", got)
	}
}
