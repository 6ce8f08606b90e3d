package contract

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/blackbox-market/blackbox/pkg/wire"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Protocols.
const (
	// NegotiateProtocol: the buyer writes one framed signed proposal, the
	// seller answers with one framed signed decision and closes.
	NegotiateProtocol protocol.ID = "/blackbox/negotiate/1.0.0"
	// JobProtocol carries one contract's life: the contract and channel
	// open, the image and inputs, payments, heartbeats, logs, outputs and
	// the receipt. 1.1.0: the seller says it received image and inputs
	// before the first payment, and its error frame carries a typed reason;
	// a 1.0.0 peer is not spoken to. 1.2.0: the seller's ready frame says
	// whether it holds the contract's image (Ready), and the buyer then
	// sends no image bytes. 1.3.0: bytes moved both ways are billed (egress.go): the
	// Ready frame also says the seller's egress price, and when the job
	// has ended the seller sends a Bill (the bytes it sent and received, and their
	// price) before the receipt; the buyer pays it with a last payment
	// update, and the receipt carries the bytes and the egress amount;
	// before Ready the seller says where the channel's funding is (its
	// confirmations while the contract waits for them, or that it starts
	// unconfirmed: Funding, funding.go).
	// 1.4.0: a running job's stream may be resumed (resume.go): after
	// either daemon restarted, or the stream broke, the buyer opens a new
	// stream whose first frame is a Resume (the contract and the bytes of
	// each output it has) instead of the contract, and the job goes on.
	// In 1.3.0 and later a service contract's heartbeat also carries, after
	// its count, a tally of the bytes moved so far, paid with the interval
	// (tally.go); a buyer that reads only the count is stopped unpaid once
	// bytes it did not pay are due.
	// Both sides still speak 1.3.0 (nothing resumed), 1.2.0 (no egress
	// billed) and 1.1.0 (the image is always sent) with a peer that knows
	// no newer version.
	JobProtocol protocol.ID = "/blackbox/job/1.4.0"
	// JobProtocol13 is the job protocol before resumption.
	JobProtocol13 protocol.ID = "/blackbox/job/1.3.0"
	// JobProtocol12 is the job protocol before egress billing.
	JobProtocol12 protocol.ID = "/blackbox/job/1.2.0"
	// JobProtocol11 is the job protocol before Ready.
	JobProtocol11 protocol.ID = "/blackbox/job/1.1.0"
	// ServiceName names the contract service in the resource manager.
	ServiceName = "blackbox.contract"
)

// negotiateTimeout bounds one negotiation on either side.
const negotiateTimeout = 15 * time.Second

// frame is a uvarint-length-prefixed message whose first byte is its type.
type conn struct {
	s   network.Stream
	r   *bufio.Reader
	wmu sync.Mutex
	// reading counts the goroutines reading s besides its handler's (a
	// live job's reader): a stream must have one reader at a time, since
	// yamux wakes one waiting read per arrival, and its close clears the
	// read deadline (lingerClose).
	reading sync.WaitGroup
}

func newConn(s network.Stream) *conn { return &conn{s: s, r: bufio.NewReaderSize(s, 4096)} }

func (c *conn) send(typ byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	buf := wire.AppendFrame(make([]byte, 0, len(payload)+11), []byte{typ}, payload)
	_, err := c.s.Write(buf)
	return err
}

func (c *conn) recv(max int) (byte, []byte, error) {
	// An oversized frame is wire.ErrTooLarge, not this package's: it breaks
	// the protocol, it is not a blob over the seller's limit.
	b, err := wire.ReadFrame(c.r, max+1)
	if err != nil {
		return 0, nil, err
	}
	if len(b) == 0 {
		return 0, nil, fmt.Errorf("%w: empty frame", ErrMalformed)
	}
	return b[0], b[1:], nil
}

func (c *conn) expect(typ byte, max int) ([]byte, error) {
	t, b, err := c.recv(max)
	if err != nil {
		return nil, err
	}
	if t == frameError {
		return nil, UnmarshalJobError(b)
	}
	if t != typ {
		return nil, fmt.Errorf("%w: frame %d, want %d", ErrMalformed, t, typ)
	}
	return b, nil
}

const (
	frameProposal byte = 1
	frameDecision byte = 2
	frameError    byte = 3
	// frameWithdraw (buyer to seller, on the negotiate protocol): the 32
	// bytes of an accepted contract's ID the buyer gives up before funding
	// it (it could not reach the seller well enough); the seller releases
	// the reservation and closes without an answer. A seller that predates
	// it answers "malformed", which the buyer ignores; its reservation then
	// ends at the funding deadline.
	frameWithdraw byte = 4
)

// withdrawTimeout bounds telling a seller of a withdrawn contract.
const withdrawTimeout = 5 * time.Second

// Withdraw tells seller that the buyer will not fund the accepted contract
// id, over any connection (a relayed, limited one included: it is a few
// bytes). The seller's answer, if any, is read and dropped.
func Withdraw(ctx context.Context, h host.Host, seller peer.ID, id string) error {
	raw, err := parseContractID(id)
	if err != nil {
		return err
	}
	ctx = network.WithAllowLimitedConn(ctx, "blackbox negotiate: withdraw")
	s, err := h.NewStream(ctx, seller, NegotiateProtocol)
	if err != nil {
		return fmt.Errorf("open negotiate stream to %s: %w", seller, err)
	}
	const mem = MaxDecisionSize + 16
	deadline, _ := ctx.Deadline()
	if err := setupStream(s, mem, deadline); err != nil {
		s.Reset()
		return err
	}
	defer s.Scope().ReleaseMemory(mem)
	c := newConn(s)
	if err := c.send(frameWithdraw, raw); err != nil {
		s.Reset()
		return fmt.Errorf("withdraw %s: %w", id, err)
	}
	_ = s.CloseWrite()
	_, _, _ = c.recv(MaxDecisionSize) // EOF, or an older seller's "malformed"
	s.Close()
	return nil
}

// parseContractID reads a contract ID: 64 hex digits, the 32 bytes a
// withdraw frame carries.
func parseContractID(id string) ([]byte, error) {
	b, err := hex.DecodeString(id)
	if err != nil || len(b) != 32 {
		return nil, fmt.Errorf("%w: contract id %q", ErrMalformed, truncate(id, 80))
	}
	return b, nil
}

// parseWithdraw decodes a withdraw frame's payload into the contract ID.
func parseWithdraw(b []byte) (string, error) {
	if len(b) != 32 {
		return "", fmt.Errorf("%w: withdraw frame of %d bytes, want 32", ErrMalformed, len(b))
	}
	return hex.EncodeToString(b), nil
}

// withdrawn releases the accepted contract a buyer withdrew: only that
// buyer's, and only while it is accepted (not yet funded).
func (s *Seller) withdrawn(from peer.ID, b []byte) error {
	id, err := parseWithdraw(b)
	if err != nil {
		return err
	}
	rec, err := s.machine.Get(RoleSeller, id)
	if err != nil {
		return err
	}
	if rec.Peer != from {
		return fmt.Errorf("%w: contract %s is not %s's", ErrInvalid, id, from)
	}
	if rec.State != StateAccepted {
		return fmt.Errorf("contract %s is %s, not accepted", id, rec.State)
	}
	if _, err := s.machine.Move(RoleSeller, id, StateExpired, "withdrawn by the buyer before funding ("+string(ReasonUnreachable)+")", nil); err != nil {
		return err
	}
	// Counted with the refusals: the operator sees buyers gave up on
	// reaching this node.
	s.metricsReject(ReasonUnreachable)
	s.log.Info("contract withdrawn by the buyer: reservation released", "contract", id, "peer", from)
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func setupStream(s network.Stream, mem int, deadline time.Time) error {
	if err := s.Scope().SetService(ServiceName); err != nil {
		return fmt.Errorf("attach to service: %w", err)
	}
	if err := s.Scope().ReserveMemory(mem, network.ReservationPriorityAlways); err != nil {
		return fmt.Errorf("reserve memory: %w", err)
	}
	return s.SetDeadline(deadline)
}

// Propose sends a signed proposal (SignProposal's bytes) to seller and
// returns its verified decision and the decision's envelope bytes (kept in
// the contract when it is an acceptance).
func Propose(ctx context.Context, h host.Host, seller peer.ID, proposal []byte, now func() time.Time) (*Decision, []byte, error) {
	if now == nil {
		now = time.Now
	}
	ctx, cancel := context.WithTimeout(ctx, negotiateTimeout)
	defer cancel()
	// Negotiation may go over a relayed, limited connection: it is small,
	// and it lets the seller's side start a hole punch (reach.go).
	ctx = network.WithAllowLimitedConn(ctx, "blackbox negotiate")
	s, err := h.NewStream(ctx, seller, NegotiateProtocol)
	if err != nil {
		return nil, nil, fmt.Errorf("open negotiate stream to %s: %w", seller, err)
	}
	d, env, err := propose(ctx, s, proposal, now)
	if err != nil {
		s.Reset()
		return nil, nil, fmt.Errorf("negotiate with %s: %w", seller, err)
	}
	s.Close()
	if d.Seller != seller {
		return nil, nil, fmt.Errorf("negotiate with %s: %w: decision from %s", seller, ErrWrongKey, d.Seller)
	}
	return d, env, nil
}

func propose(ctx context.Context, s network.Stream, proposal []byte, now func() time.Time) (*Decision, []byte, error) {
	const mem = MaxDecisionSize + 16
	deadline, _ := ctx.Deadline()
	if err := setupStream(s, mem, deadline); err != nil {
		return nil, nil, err
	}
	defer s.Scope().ReleaseMemory(mem)
	c := newConn(s)
	if err := c.send(frameProposal, proposal); err != nil {
		return nil, nil, fmt.Errorf("send proposal: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		return nil, nil, err
	}
	env, err := c.expect(frameDecision, MaxDecisionSize)
	if err != nil {
		return nil, nil, fmt.Errorf("read decision: %w", err)
	}
	d, err := OpenDecision(env, now())
	if err != nil {
		return nil, nil, fmt.Errorf("open decision: %w", err)
	}
	return d, env, nil
}

// handleNegotiate is the seller's /blackbox/negotiate/1.0.0 handler.
func (s *Seller) handleNegotiate(st network.Stream) {
	remote := st.Conn().RemotePeer()
	const mem = MaxProposalSize + MaxDecisionSize + 32
	if err := setupStream(st, mem, time.Now().Add(negotiateTimeout)); err != nil {
		s.log.Debug("negotiate stream refused", "peer", remote, "err", err)
		st.Reset()
		return
	}
	defer st.Scope().ReleaseMemory(mem)
	c := newConn(st)
	var env []byte
	t, b, err := c.recv(MaxProposalSize)
	if err == nil && t == frameWithdraw {
		if err := s.withdrawn(remote, b); err != nil {
			s.log.Debug("withdraw refused", "peer", remote, "err", err)
		}
		st.Close()
		return
	}
	if err != nil || t != frameProposal {
		s.log.Debug("bad negotiate stream", "peer", remote, "err", err, "frame", t)
		env, err = s.sign(&Decision{Verdict: Reject, Reason: ReasonMalformed, Message: "expected one proposal frame", Buyer: remote})
	} else {
		env, err = s.Decide(context.Background(), remote, b)
	}
	if err == nil {
		err = c.send(frameDecision, env)
	}
	if err != nil {
		s.log.Debug("negotiate failed", "peer", remote, "err", err)
		st.Reset()
		return
	}
	st.Close()
}

func (s *Seller) sign(d *Decision) ([]byte, error) {
	now := s.clock.Now()
	d.Version = Version
	d.Seller = s.id
	d.Issued = now
	d.Expiry = now.Add(s.cfg.FundTimeout + time.Minute)
	if d.Expiry.Sub(d.Issued) > MaxRecordTTL {
		d.Expiry = d.Issued.Add(MaxRecordTTL)
	}
	return SignDecision(d, s.cfg.Key)
}

// Decide answers one signed proposal from peer from: it is the whole of the
// seller's negotiation logic, callable without a stream (the node's own
// API and benchmarks use it). Every refusal is a signed decision with a
// reason and changes nothing; an acceptance reserves the capacity and
// records the contract in one store transaction.
func (s *Seller) Decide(ctx context.Context, from peer.ID, env []byte) ([]byte, error) {
	now := s.clock.Now()
	p, err := OpenProposal(env, now)
	// retry is the retry-after of a refusal for capacity (retryafter.go).
	var retry time.Duration
	reject := func(r Reason, msg string) ([]byte, error) {
		d := &Decision{Verdict: Reject, Reason: r, Message: truncate(msg, maxMessageLen), Buyer: from, RetryAfter: retry}
		if p != nil {
			d.ProposalID = p.ID()
		}
		s.log.Log(ctx, s.refusals.level(from.String(), string(r)), "proposal rejected", "peer", from, "reason", r, "msg", msg)
		s.metricsReject(r)
		return s.sign(d)
	}
	if err != nil {
		p = nil
		if errors.Is(err, ErrExpired) {
			return reject(ReasonExpired, err.Error())
		}
		if errors.Is(err, ErrUnsupported) {
			return reject(ReasonUnsupported, err.Error()+"; this seller runs an older blackbox")
		}
		return reject(ReasonMalformed, err.Error())
	}
	if p.Seller != s.id || p.Buyer != from {
		return reject(ReasonPolicy, "proposal names another seller or was sent by another peer than its buyer")
	}
	if p.Network != "" && s.cfg.Network != "" && p.Network != s.cfg.Network {
		return reject(ReasonNetwork, "the proposal pays on Bitcoin "+p.Network+"; this seller is paid on "+s.cfg.Network)
	}
	o := s.cfg.Offer()
	if o == nil {
		return reject(ReasonCapacity, "nothing on offer")
	}
	req := &p.Request
	if req.Runtime != "" && !slices.Contains(o.Runtimes, req.Runtime) {
		return reject(ReasonRuntime, "runtime "+req.Runtime+" not offered")
	}
	if req.ImageSize > uint64(s.cfg.MaxImageBytes) || !req.ImageIsDigest() && !s.cfg.AllowPull {
		return reject(ReasonPolicy, "image too large or pulls not allowed")
	}
	var inBytes uint64
	for _, in := range req.Inputs {
		inBytes += in.Size
	}
	if inBytes > uint64(s.cfg.MaxInputBytes) {
		return reject(ReasonPolicy, "inputs too large")
	}
	if s.cfg.Policy != nil {
		if err := s.cfg.Policy(p); err != nil {
			return reject(ReasonPolicy, err.Error())
		}
	}
	r := o.Resources
	if req.Resources.CPUMillis > r.CPUMillis || req.Resources.MemoryBytes > r.MemoryBytes || req.Resources.DiskBytes > r.DiskBytes {
		return reject(ReasonCapacity, "request exceeds what is on offer")
	}
	if msg := s.escrowRefusal(p); msg != "" {
		return reject(ReasonPolicy, msg)
	}
	terms := TermsFor(o, req)
	counter := &Decision{Verdict: Counter, ProposalID: p.ID(), Buyer: from}
	if o.MinDuration > 0 && req.Duration < o.MinDuration {
		counter.Reason, counter.CounterDur = ReasonDuration, o.MinDuration
	} else if o.MaxDuration > 0 && req.Duration > o.MaxDuration {
		counter.Reason, counter.CounterDur = ReasonDuration, o.MaxDuration
	}
	if p.Interval != terms.Interval {
		return reject(ReasonPolicy, fmt.Sprintf("billing interval must be %s", terms.Interval))
	}
	if p.Price < terms.Price || p.StartFee < terms.StartFee {
		counter.Reason, counter.CounterPrice = ReasonPrice, terms.Price
	}
	if counter.Reason != ReasonNone {
		s.log.Log(ctx, s.refusals.level(from.String(), "counter "+string(counter.Reason)), "proposal countered",
			"peer", from, "contract", counter.ProposalID, "reason", counter.Reason)
		s.metricsReject(counter.Reason)
		return s.sign(counter)
	}
	payTerms, err := s.paymentTerms(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("payment terms: %w", err)
	}
	id := p.ID()
	// A proposal refused for capacity may wait for a running contract to
	// end (queue.go), then try again.
	queueUntil := now.Add(s.cfg.QueueWait)
	if p.Expiry.Before(queueUntil) {
		queueUntil = p.Expiry
	}
	var aenv []byte
	for {
		accept := &Decision{Verdict: Accept, ProposalID: id, Buyer: from, PaymentTerms: payTerms, FundBy: now.Add(s.cfg.FundTimeout),
			OpenHints: readsOpenHints(s.cfg.Payments, p)}
		aenv, err = s.sign(accept)
		if err != nil {
			return nil, err
		}
		c := &Contract{ID: id, Proposal: p, Acceptance: accept, ProposalEnv: env, AcceptanceEnv: aenv}
		rec := &Record{ID: id, Role: RoleSeller, Peer: from, State: StateAccepted, Contract: c.Marshal(), Proposal: p, EgressPrice: o.Prices.EgressGiB}
		capacity := s.cfg.Capacity()
		err = s.cfg.Store.Update(func(kv KV) error {
			res := Reservation{ID: id, Resources: req.Resources, Until: accept.FundBy}
			if err := admit(kv, res, capacity, p.Expiry, now); err != nil {
				return err
			}
			return s.machine.create(kv, rec)
		})
		if !errors.Is(err, ErrCapacity) || !s.awaitCapacity(ctx, queueUntil) {
			break
		}
		now = s.clock.Now()
	}
	switch {
	case errors.Is(err, ErrReplayed):
		return reject(ReasonReplayed, "proposal already seen")
	case errors.Is(err, ErrCapacity):
		retry = s.holds.retryAfter()
		return reject(ReasonCapacity, "not enough spare capacity now")
	case err != nil:
		return nil, fmt.Errorf("admit contract %s: %w", id, err)
	}
	s.holds.admitted()
	s.refusals.forget(from.String())
	s.log.Info("contract accepted", "contract", id, "peer", from, "cpu_millis", req.Resources.CPUMillis,
		"memory", req.Resources.MemoryBytes, "duration", req.Duration, "total_sats", terms.Total)
	return aenv, nil
}

func newNonce() []byte {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return b
}
