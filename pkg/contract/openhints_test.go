package contract

import (
	"bytes"
	"testing"
	"time"
)

type hintPayer struct{ Payer }

func (hintPayer) WithOpenHints(open []byte) []byte { return append(bytes.Clone(open), 'h') }

// TestOpenHintsNegotiated: an acceptance says whether the seller reads
// open hints (field 15, kept through its encoding), and the buyer's payer
// adds them to the open only then.
func TestOpenHintsNegotiated(t *testing.T) {
	t0 := time.Now()
	_, seller := newKey(t)
	d := &Decision{Version: Version, ProposalID: string(bytes.Repeat([]byte("ab"), 32)), Seller: seller, Verdict: Accept,
		FundBy: t0, Issued: t0, Expiry: t0.Add(time.Minute), OpenHints: true}
	b, err := d.MarshalRecord()
	if err != nil {
		t.Fatal(err)
	}
	var got Decision
	if err := got.UnmarshalRecord(b); err != nil || !got.OpenHints {
		t.Fatalf("decoded %+v %v", got, err)
	}
	ct := &Contract{Acceptance: &got}
	if o := withOpenHints(hintPayer{}, ct, []byte("open")); string(o) != "openh" {
		t.Fatalf("hinted open %q", o)
	}
	got.OpenHints = false
	if o := withOpenHints(hintPayer{}, ct, []byte("open")); string(o) != "open" {
		t.Fatalf("an older seller got %q", o)
	}
}
