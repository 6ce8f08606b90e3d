package contract

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/blackbox-market/blackbox/pkg/wire"
)

// goldenID is a peer ID fixed by seed, so the golden bytes below are too.
func goldenID(t *testing.T, seed byte) peer.ID {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{seed}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type goldenRecord interface {
	MarshalRecord() ([]byte, error)
	UnmarshalRecord([]byte) error
}

// TestGoldenEncodings pins the bytes each record encodes to: a change of
// codec must not change one byte on the wire (signatures and contract IDs
// are over these bytes). Each is decoded and encoded again to the same bytes.
func TestGoldenEncodings(t *testing.T) {
	buyer, seller := goldenID(t, 1), goldenID(t, 2)
	p := testProposal(buyer, seller)
	p.Request.Runtime = "runc"
	p.Request.Deterministic = true
	p.Request.MinReputation = 0.25
	p.Request.Resources.DiskBytes = 1 << 30
	p.Request.Resources.BandwidthBps = 1e6
	d := &Decision{Version: Version, ProposalID: strings.Repeat("cd", 32), Seller: seller, Buyer: buyer,
		Verdict: Counter, Reason: ReasonPrice, Message: "too cheap", CounterPrice: 2500,
		CounterDur: 90 * time.Second, PaymentTerms: []byte{1, 2, 3}, FundBy: t0.Add(30 * time.Second),
		Issued: t0, Expiry: t0.Add(time.Minute)}
	r := &Receipt{Version: Version, ContractID: strings.Repeat("ef", 32), Seller: seller, Buyer: buyer,
		ExitCode: -9, Reason: "killed", Usage: Usage{CPUTime: 1500 * time.Millisecond, PeakMemory: 1 << 20, OOMKills: 1, Wall: 3 * time.Second},
		Outputs: []Output{{Name: "x", SHA256: "sha256:" + strings.Repeat("02", 32), Size: 5}, {Name: "y", SHA256: "sha256:" + strings.Repeat("03", 32)}},
		Billed:  4000, Intervals: 2, Issued: t0, Expiry: t0.Add(ReceiptTTL)}
	for _, c := range []struct {
		name string
		rec  goldenRecord
		new  func() goldenRecord
		want string
	}{
		{"proposal", p, func() goldenRecord { return new(Proposal) }, goldenProposal},
		{"decision", d, func() goldenRecord { return new(Decision) }, goldenDecision},
		{"receipt", r, func() goldenRecord { return new(Receipt) }, goldenReceipt},
	} {
		b, err := c.rec.MarshalRecord()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := hex.EncodeToString(b); got != c.want {
			t.Errorf("%s encodes to\n%s\nwant\n%s", c.name, got, c.want)
			continue
		}
		back := c.new()
		if err := back.UnmarshalRecord(b); err != nil {
			t.Fatalf("%s: decode: %v", c.name, err)
		}
		again, err := back.MarshalRecord()
		if err != nil || !bytes.Equal(again, b) {
			t.Errorf("%s: decode and encode again: %x, %v", c.name, again, err)
		}
	}
	c := &Contract{ProposalEnv: []byte("proposal envelope"), AcceptanceEnv: []byte("acceptance envelope")}
	if got := hex.EncodeToString(c.Marshal()); got != goldenContract {
		t.Errorf("contract encodes to %s, want %s", got, goldenContract)
	}
	je := &JobError{Reason: RefuseBadImage, Message: "bad image: not a valid tar archive"}
	if got := hex.EncodeToString(marshalJobError(je)); got != goldenJobError {
		t.Errorf("job error encodes to %s, want %s", got, goldenJobError)
	}
	if back := UnmarshalJobError(marshalJobError(je)); !reflect.DeepEqual(back, je) {
		t.Errorf("job error round trip: %+v", back)
	}
	for r, want := range map[Ready]string{{HaveImage: true}: goldenReadyHave, {}: ""} {
		if got := hex.EncodeToString(marshalReady(r)); got != want {
			t.Errorf("ready %+v encodes to %q, want %q", r, got, want)
		}
		if back, err := unmarshalReady(marshalReady(r)); err != nil || back != r {
			t.Errorf("ready %+v round trip: %+v %v", r, back, err)
		}
	}
}

// TestDecodeErrorKinds pins which error each kind of bad input wraps.
func TestDecodeErrorKinds(t *testing.T) {
	good, err := testProposal(goldenID(t, 1), goldenID(t, 2)).MarshalRecord()
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		b    []byte
		want error
	}{
		"truncated":       {good[:len(good)-1], ErrMalformed},
		"bad tag":         {[]byte{0x80}, ErrMalformed},
		"unknown field":   {[]byte{0x68, 1}, ErrMalformed},
		"field zero":      {[]byte{0x00, 1}, ErrMalformed},
		"wrong wire type": {[]byte{0x0a, 0}, ErrMalformed},
		"repeated scalar": {[]byte{0x08, 1, 0x08, 1}, ErrMalformed},
		"out of range":    {[]byte{0x08, 0xff, 0xff, 0xff, 0xff, 0x1f}, ErrMalformed},
		"too large":       {make([]byte, MaxProposalSize+1), ErrTooLarge},
		"bad request":     {append([]byte{0x2a, 2}, 0x78, 1), ErrMalformed},
	} {
		var p Proposal
		if err := p.UnmarshalRecord(c.b); !errors.Is(err, c.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	var rc Receipt
	if err := rc.UnmarshalRecord([]byte{0x5a, 0, 0x5a, 0}); err != nil {
		t.Errorf("repeated outputs: %v", err)
	}
	if _, err := OpenContract(make([]byte, MaxContractSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("contract too large: %v", err)
	}
	if _, err := OpenContract([]byte{0x18, 1}); !errors.Is(err, ErrMalformed) {
		t.Errorf("contract unknown field: %v", err)
	}
}

// TestFrames pins the job and negotiation frames: a uvarint length, the
// type byte, the payload; an oversized frame is a protocol error, not this
// package's ErrTooLarge (which means a blob over the seller's limit).
func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	c := &conn{s: nil, r: bufio.NewReader(&buf)}
	buf.Write(wire.AppendFrame(nil, []byte{frameProposal}, []byte("abc")))
	if got := hex.EncodeToString(buf.Bytes()); got != "0401616263" {
		t.Fatalf("frame %s", got)
	}
	if typ, b, err := c.recv(3); err != nil || typ != frameProposal || string(b) != "abc" {
		t.Fatalf("recv: %d %q %v", typ, b, err)
	}
	buf.Write([]byte{5, 1, 2, 3, 4, 5})
	if _, _, err := c.recv(3); err == nil || errors.Is(err, ErrTooLarge) || blobRefusal(err).(*refusal).reason != RefuseProtocol {
		t.Fatalf("oversized frame: %v", err)
	}
	if _, _, err := (&conn{r: bufio.NewReader(bytes.NewReader([]byte{0}))}).recv(3); !errors.Is(err, ErrMalformed) {
		t.Fatalf("empty frame: %v", err)
	}
}

const (
	goldenProposal  = "080112260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c1a260024080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b39420072af4010a477368613235363a616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261621202736812022d6312106563686f206869203e202f6f75742f7812001a03413d3122530a06696e2e74787412477368613235363a30313031303130313031303130313031303130313031303130313031303130313031303130313031303130313031303130313031303130313031303130313031180328e80730808080800138808080800440c0843d48c0a90750f40358fa01620265756880c59186a034708080407a0472756e6380010130e0d40338d00f40e8074a210202020202020202020202020202020202020202020202020202020202020202025210090909090909090909090909090909095880e8b584a03460e0bcb984a034"
	goldenDecision  = "08011220cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd1a260024080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b39422260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c2802320570726963653a09746f6f20636865617040c4134890bf05520301020358b0d2b784a0346080e8b584a03468e0bcb984a034"
	goldenReceipt   = "08011220efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef1a260024080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b39422260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c281132066b696c6c656438dc0b40808040480150b8175a4e0a017812477368613235363a3032303230323032303230323032303230323032303230323032303230323032303230323032303230323032303230323032303230323032303230323032303218055a4c0a017912477368613235363a3033303330333033303330333033303330333033303330333033303330333033303330333033303330333033303330333033303330333033303330333033303360a01f68027080e8b584a0347880c0fac19535"
	goldenContract  = "0a1170726f706f73616c20656e76656c6f70651213616363657074616e636520656e76656c6f7065"
	goldenReadyHave = "0801"
	goldenJobError  = "0a096261645f696d616765122262616420696d6167653a206e6f7420612076616c6964207461722061726368697665"
)

// BenchmarkDecodeProposal measures the codec alone on a proposal with a
// full request.
func BenchmarkDecodeProposal(b *testing.B) {
	_, buyer := newKey(b)
	_, seller := newKey(b)
	raw, err := testProposal(buyer, seller).MarshalRecord()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var p Proposal
		if err := p.UnmarshalRecord(raw); err != nil {
			b.Fatal(err)
		}
	}
}
