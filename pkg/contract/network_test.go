package contract

import (
	"errors"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

// A buyer on one Bitcoin network is told, with the reason, that every
// seller is paid on another; an offer that does not name its network
// (an older seller) is not ruled out.
func TestExplainNetwork(t *testing.T) {
	mk := func(seller, network string) *offer.Offer {
		return &offer.Offer{Seller: peer.ID(seller), Network: network, Resources: offer.Resources{CPUMillis: 1000}}
	}
	err := explainNetwork([]*offer.Offer{mk("a", "mainnet"), mk("b", "testnet")}, "regtest", "me")
	var ne *NoOfferError
	if !errors.As(err, &ne) || ne.Miss != MissNetwork || !strings.Contains(err.Error(), "paid on another Bitcoin network: mainnet, testnet; this node pays on regtest") {
		t.Fatalf("explain: %v", err)
	}
	if err := explainNetwork([]*offer.Offer{mk("a", "mainnet"), mk("b", "regtest")}, "regtest", "me"); err != nil {
		t.Fatalf("one seller on the network: %v", err)
	}
	if err := explainNetwork([]*offer.Offer{mk("a", "")}, "regtest", "me"); err != nil {
		t.Fatalf("an offer without a network: %v", err)
	}
	if (offer.Filter{Network: "regtest"}).Match(mk("a", "mainnet")) {
		t.Fatal("the filter kept an offer on another network")
	}
	// The proposal carries the network through its encoding.
	p := &Proposal{Version: Version, Network: "signet"}
	b, err := p.MarshalRecord()
	if err != nil {
		t.Fatal(err)
	}
	var q Proposal
	if err := q.UnmarshalRecord(b); err != nil || q.Network != "signet" {
		t.Fatalf("decoded %q, %v", q.Network, err)
	}
	// And the offer.
	o := mk("", "testnet4")
	if b, err = o.MarshalRecord(); err != nil {
		t.Fatal(err)
	}
	var o2 offer.Offer
	if err := o2.UnmarshalRecord(b); err != nil || o2.Network != "testnet4" {
		t.Fatalf("decoded offer network %q, %v", o2.Network, err)
	}
}
