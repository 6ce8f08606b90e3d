//go:build integration && versionmix

package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/contract"
)

// TestVersionMix runs a job between this binary and another version's
// (BLACKBOX_TEST_OTHER_BIN, built by hand from another commit), each way:
// a seller of one version and a buyer of the other find each other, agree,
// pay, run and settle. A manual check of version mixing across an
// upgrade, not part of CI (it needs a second build):
//
//	git worktree add /tmp/old COMMIT && (cd /tmp/old && go build -o /tmp/bin-old ./cmd/blackbox)
//	BLACKBOX_TEST_OTHER_BIN=/tmp/bin-old BLACKBOX_TEST_BIN=$PWD/build/bin/blackbox BLACKBOX_TEST_BTCD=... \
//	  go test -tags 'integration versionmix' -count=1 -run TestVersionMix ./cmd/blackbox/ -v
func TestVersionMix(t *testing.T) {
	other := os.Getenv("BLACKBOX_TEST_OTHER_BIN")
	if other == "" {
		t.Fatal("BLACKBOX_TEST_OTHER_BIN names the other version's binary")
	}
	m := newMarket(t)
	this := m.bin
	image := busybox(t, t.TempDir())
	for _, tc := range []struct{ name, seller, buyer string }{
		{"other seller, this buyer", other, this},
		{"this seller, other buyer", this, other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.bin = tc.seller
			seller := m.daemon(sellerEnv())
			m.bin = tc.buyer
			buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
			for _, d := range []*daemon{seller, buyer} {
				s, err := d.api().Status(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s runs %s", d.dir, s.Version)
			}
			m.fund(buyer.proc, 1_000_000)
			m.waitMarket(buyer, 1)
			j := submit(t, buyer, image, filepath.Join(t.TempDir(), "res"), jobFlags, "sh", "-c", "echo mixed")
			if j.State != contract.JobDone || j.Receipt == nil {
				t.Fatalf("job between versions: %s %q", j.State, j.Error)
			}
			t.Logf("%s: job %s done, paid %d sat, receipt billed %d", tc.name, j.ContractID[:12], j.Paid, j.Receipt.Billed)
		})
	}
}
