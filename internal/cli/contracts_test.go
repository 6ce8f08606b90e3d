package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
)

// contractsBackend serves a fixed seller view.
type contractsBackend struct {
	api.Backend
	view api.Contracts
}

func (b *contractsBackend) Contracts(context.Context) (api.Contracts, error) { return b.view, nil }

// TestContractsOutputIsOrdered: `blackbox contracts` prints the same text
// every time: contracts newest first, earnings and refusals by name (it
// printed them in map order).
func TestContractsOutputIsOrdered(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b := &contractsBackend{view: api.Contracts{
		Contracts: []*contract.Record{
			{ID: "aaaaaaaaaaaaaaaa-old", Updated: t0},
			{ID: "cccccccccccccccc-new", Updated: t0.Add(time.Hour)},
			{ID: "bbbbbbbbbbbbbbbb-mid", Updated: t0.Add(time.Minute)},
		},
		EarnedSats: map[string]int64{"settled": 5, "running": 3, "completed": 7, "failed": 1, "funded": 2},
		Rejections: map[string]uint64{"price": 1, "capacity": 2, "duration": 3, "busy": 4, "image": 5},
	}}
	data := fakeDaemon(t, b)
	code, first, errOut := run(t, "--data-dir", data, "contracts")
	if code != 0 {
		t.Fatalf("contracts: exit %d: %s", code, errOut)
	}
	if !strings.Contains(first, "(completed 7 sat, failed 1 sat, funded 2 sat, running 3 sat, settled 5 sat)") ||
		!strings.Contains(first, "busy 4, capacity 2, duration 3, image 5, price 1") {
		t.Errorf("earnings or refusals out of order:\n%s", first)
	}
	iNew, iMid, iOld := strings.Index(first, "cccc"), strings.Index(first, "bbbb"), strings.Index(first, "aaaa")
	if iNew < 0 || iMid < iNew || iOld < iMid {
		t.Errorf("contracts not newest first:\n%s", first)
	}
	for range 10 {
		if _, again, _ := run(t, "--data-dir", data, "contracts"); again != first {
			t.Fatalf("output changed between runs:\n%s\n---\n%s", first, again)
		}
	}
}
