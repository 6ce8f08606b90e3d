package api

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseSince(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"": 0, "7d": 7 * 24 * time.Hour, "30d": 30 * 24 * time.Hour, "1.5d": 36 * time.Hour,
		"24h": 24 * time.Hour, "90m": 90 * time.Minute, " 2d ": 48 * time.Hour,
		// what Client.Earnings sends
		(168 * time.Hour).String(): 168 * time.Hour,
	} {
		if got, err := ParseSince(in); err != nil || got != want {
			t.Errorf("ParseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"7x", "-3d", "-1h", "d", "1e9d", "seven days"} {
		if _, err := ParseSince(in); err == nil {
			t.Errorf("ParseSince(%q) accepted", in)
		}
	}
}

// earnBackend answers Earnings with what it was asked.
type earnBackend struct {
	fakeBackend
	asked []time.Duration
}

func (b *earnBackend) Earnings(_ context.Context, since time.Duration) (Earnings, error) {
	b.asked = append(b.asked, since)
	return Earnings{Today: EarningsTotals{EarnedSat: 7, Contracts: map[string]int64{"completed": 1}},
		NoWork: []NoWorkReason{{Code: "price", Detail: "d", Fix: "f"}}}, nil
}

// TestEarningsRoute: the client's period reaches the backend; a period that
// does not parse is refused with 400 before it does.
func TestEarningsRoute(t *testing.T) {
	b := &earnBackend{}
	rec := &recorder{header: http.Header{}}
	req, _ := http.NewRequest("GET", "http://blackbox/v1/earnings?since=soon", nil)
	Handler(b, quiet()).ServeHTTP(rec, req)
	if rec.code != http.StatusBadRequest || !strings.Contains(rec.body.String(), "since") || len(b.asked) != 0 {
		t.Fatalf("since=soon: %d %s, backend asked %v", rec.code, rec.body.String(), b.asked)
	}
	c, _ := serve(t, b)
	e, err := c.Earnings(context.Background(), 7*24*time.Hour)
	if err != nil || len(b.asked) != 1 || b.asked[0] != 7*24*time.Hour {
		t.Fatalf("Earnings: %v, backend asked %v", err, b.asked)
	}
	if e.Today.EarnedSat != 7 || e.Today.Contracts["completed"] != 1 || len(e.NoWork) != 1 || e.NoWork[0].Fix != "f" {
		t.Fatalf("earnings came back as %+v", e)
	}
}
