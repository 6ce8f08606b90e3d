package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// Escrowed jobs (contract/escrowjob.go) on this node: as a buyer it funds
// the escrow and releases it on a verified receipt; as a seller it takes
// the escrow, starts once it is funded and completes the release; as an
// arbiter (arbiter.enabled) it gives terms, holds the case of a dispute and
// signs the payout it decides (arbiter.go). Every role ticks the escrows on
// every block and completes an arbitrated payout once the CLTV delay is
// reached.

var (
	_ contract.EscrowPayer    = escrowPayer{}
	_ contract.EscrowReceiver = escrowReceiver{}
)

// escrowNode runs this node's escrows.
type escrowNode struct {
	n *Node
	m *payment.EscrowManager

	mu sync.Mutex
	// byContract maps a contract ID to the escrow that pays it.
	byContract map[string]string
	kick       chan struct{}
	// fees is the fee each arbiter asked last (peer ID → sats).
	fees sync.Map
	// recorded: the settled escrows the history holds (escrowsettle.go).
	recorded map[string]bool
}

// newEscrow loads the escrows; the node's payments must be on.
func (n *Node) newEscrow() error {
	if n.payments == nil {
		return nil
	}
	m, err := payment.NewEscrowManager(payment.EscrowManagerConfig{
		Config: n.payCfg, Chain: n.chain, Store: store.NewPaymentStore(n.db),
		Keys: n.wallet.Keyring(), Funder: n.watchFunding(n.wallet), Log: n.log,
	})
	if err != nil {
		return fmt.Errorf("escrow manager: %w", err)
	}
	e := &escrowNode{n: n, m: m, byContract: map[string]string{}, kick: make(chan struct{}, 1), recorded: map[string]bool{}}
	for _, r := range m.Escrows() {
		if r.Market != nil && r.Market.Contract != "" && r.State != payment.EscrowFailed {
			e.byContract[r.Market.Contract] = r.ID
		}
	}
	n.escrow = e
	return nil
}

// startEscrow serves the escrow protocol and ticks the escrows.
func (n *Node) startEscrow(ctx context.Context) {
	e := n.escrow
	if e == nil {
		return
	}
	contract.ServeEscrow(n.host, e.handle)
	n.push(func() error { n.host.RemoveStreamHandler(contract.EscrowProtocol); return nil })
	if m := n.buyerMachine(); m != nil {
		prev := m.OnMove
		m.OnMove = func(r *contract.Record, from contract.State) {
			if prev != nil {
				prev(r, from)
			}
			if r.Role == contract.RoleBuyer && r.State == contract.StateSettled && e.escrowOf(r.ID) != "" {
				e.poke()
			}
		}
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		e.loop(ctx)
	}()
}

func (n *Node) buyerMachine() *contract.Machine {
	if n.buyer == nil {
		return nil
	}
	return n.buyer.Machine()
}

func (e *escrowNode) poke() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

func (e *escrowNode) bind(contractID, escrowID string) {
	e.mu.Lock()
	e.byContract[contractID] = escrowID
	e.mu.Unlock()
}

func (e *escrowNode) escrowOf(contractID string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.byContract[contractID]
}

// loop ticks the escrows on every new block (and when poked) and then
// does what each one waits for from this node.
func (e *escrowNode) loop(ctx context.Context) {
	last := int32(-1)
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		tip, err := e.n.tips.Tip(ctx)
		if err == nil {
			newBlock := tip != last
			if newBlock {
				if err := e.m.Tick(ctx); err != nil && ctx.Err() == nil {
					e.n.log.Debug("escrow tick", "tip", tip, "err", err)
				} else {
					last = tip
				}
			}
			e.act(ctx, tip, newBlock)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.kick:
		}
	}
}

// act does each escrow's next step that is this node's to do.
func (e *escrowNode) act(ctx context.Context, tip int32, newBlock bool) {
	e.recordPayouts()
	for _, r := range e.m.Escrows() {
		if r.State.Final() || r.Market == nil {
			continue
		}
		var err error
		switch {
		case r.Role == payment.RoleBuyer && r.State == payment.EscrowFunded && !r.Market.Hold && e.settled(r.Market.Contract):
			err = e.release(ctx, r)
		case r.Role != payment.RoleArbiter && r.State == payment.EscrowDisputed && r.SpendTxid == "" && int64(tip) >= int64(r.Delay):
			if kind, ok := arbiterSig(r); ok {
				_, _, err = e.m.ArbitrateKind(ctx, r.ID, kind)
				if err == nil {
					e.n.log.Info("escrow: arbitrated payout broadcast", "escrow", r.ID, "contract", r.Market.Contract, "kind", kind.String())
				}
			}
		case r.Role == payment.RoleArbiter && r.Market.Decision != "" && r.SpendTxid == "" && newBlock:
			err = e.tellDecision(ctx, r)
		}
		if err != nil && ctx.Err() == nil {
			e.n.log.Warn("escrow step", "escrow", r.ID, "err", err)
		}
	}
}

// arbiterSig is the arbitrated payout the arbiter signed for r, if any.
func arbiterSig(r *payment.EscrowRecord) (payment.SpendKind, bool) {
	for _, s := range r.Sigs {
		if s.Kind.Arbitrated() && bytes.Equal(s.Key, r.ArbiterKey) {
			return s.Kind, true
		}
	}
	return 0, false
}

// settled reports whether this node as a buyer verified the receipt of
// contract id.
func (e *escrowNode) settled(id string) bool {
	m := e.n.buyerMachine()
	if m == nil {
		return false
	}
	r, err := m.Get(contract.RoleBuyer, id)
	return err == nil && r.State == contract.StateSettled
}

// escrowPay is the job stream's payment frame of an escrowed contract: the
// cumulative total the buyer owes, no signature (the escrow holds it).
func escrowPay(total int64) []byte { return binary.AppendUvarint([]byte{'E'}, uint64(total)) }

func decodeEscrowPay(b []byte) (int64, error) {
	if len(b) < 2 || b[0] != 'E' {
		return 0, fmt.Errorf("%w: not an escrowed payment", contract.ErrMalformed)
	}
	v, n := binary.Uvarint(b[1:])
	if n <= 0 || n != len(b)-1 || v > 21e14 || !bytes.Equal(escrowPay(int64(v)), b) { // one encoding only
		return 0, fmt.Errorf("%w: escrowed payment total", contract.ErrMalformed)
	}
	return int64(v), nil
}

// escrowPayer is the buyer's Payer: channels, and escrows for contracts
// that name an arbiter.
type escrowPayer struct {
	channelPayer
	n *Node
}

func (p escrowPayer) PrepareEscrow(ctx context.Context, ct *contract.Contract) ([]byte, error) {
	if p.n.escrow == nil {
		return nil, errors.New("escrow: payments are off")
	}
	return p.n.escrow.fund(ctx, ct)
}

func (p escrowPayer) Pay(ctx context.Context, seller peer.ID, contractID string, total int64) ([]byte, error) {
	if e := p.n.escrow; e != nil && e.escrowOf(contractID) != "" {
		return escrowPay(total), nil
	}
	return p.channelPayer.Pay(ctx, seller, contractID, total)
}

// PayAsync implements contract.AsyncPayer (channelPayer's, which would
// otherwise pay an escrowed contract on a channel).
func (p escrowPayer) PayAsync(ctx context.Context, seller peer.ID, contractID string, total int64) ([]byte, func() error, error) {
	if e := p.n.escrow; e != nil && e.escrowOf(contractID) != "" {
		return escrowPay(total), func() error { return nil }, nil
	}
	return p.channelPayer.PayAsync(ctx, seller, contractID, total)
}

// escrowReceiver is the seller's PaymentReceiver: channels, and escrows.
type escrowReceiver struct {
	*channelReceiver
	n *Node
}

func (r escrowReceiver) EscrowTerms(ctx context.Context, p *contract.Proposal) ([]byte, error) {
	if r.n.escrow == nil {
		return nil, errors.New("escrow: payments are off")
	}
	t, err := r.n.escrow.m.Terms(payment.RoleSeller)
	if err != nil {
		return nil, err
	}
	return (&contract.SellerEscrowTerms{Key: t.Key, KeyIndex: t.KeyIndex, PayoutScript: t.PayoutScript,
		MaxDelay: uint32(r.n.cfg.Arbiter.MaxDelay)}).Marshal(), nil
}

func (r escrowReceiver) AcceptEscrow(ctx context.Context, buyer peer.ID, ct *contract.Contract, msg []byte) error {
	if r.n.escrow == nil {
		return errors.New("escrow: payments are off")
	}
	return r.n.escrow.accept(ctx, buyer, ct, msg)
}

func (r escrowReceiver) AcceptUpdate(ctx context.Context, buyer peer.ID, contractID string, msg []byte) (int64, error) {
	e := r.n.escrow
	if e == nil || e.escrowOf(contractID) == "" {
		return r.channelReceiver.AcceptUpdate(ctx, buyer, contractID, msg)
	}
	total, err := decodeEscrowPay(msg)
	if err != nil {
		return 0, err
	}
	rec, err := e.m.Escrow(e.escrowOf(contractID))
	if err != nil {
		return 0, err
	}
	if rec.State != payment.EscrowFunded {
		return 0, fmt.Errorf("escrow %s is %s, not funded", rec.ID, rec.State)
	}
	if total > rec.Amount {
		return 0, fmt.Errorf("escrowed payment of %d sats exceeds the escrow's %d", total, rec.Amount)
	}
	return total, nil
}

// fund is the buyer's side of an escrowed contract: the arbiter's terms,
// the escrow funded for the contract's whole price, the arbiter told, and
// the offer for the seller.
func (e *escrowNode) fund(ctx context.Context, ct *contract.Contract) ([]byte, error) {
	p := ct.Proposal
	arb, err := peer.Decode(p.Request.Escrow)
	if err != nil {
		return nil, fmt.Errorf("escrow arbiter: %w", err)
	}
	st, err := contract.UnmarshalSellerEscrowTerms(ct.Acceptance.PaymentTerms)
	if err != nil {
		return nil, fmt.Errorf("seller's escrow terms: %w", err)
	}
	ao, err := e.arbiterOffer(ctx, arb)
	if err != nil {
		return nil, err
	}
	delay, err := e.delayFor(p, ao, st)
	if err != nil {
		return nil, err
	}
	var extra []*wire.TxOut
	if ao.FeeSat > 0 {
		extra = append(extra, wire.NewTxOut(int64(ao.FeeSat), ao.PayoutScript))
	}
	rate := e.n.payCfg.FeeRate(ctx, e.n.chain, 6)
	market := payment.EscrowMarket{Contract: ct.ID, Buyer: p.Buyer.String(), Seller: p.Seller.String(), Arbiter: arb.String(),
		ArbiterFee: int64(ao.FeeSat), Hold: e.n.cfg.Arbiter.Release == "manual"}
	// The arbiter holds the escrow before its funding is sent: money is
	// never locked where no arbiter could release it.
	register := func(rec *payment.EscrowRecord, offer *payment.EscrowOffer) error {
		var tx wire.MsgTx
		if tx.Deserialize(bytes.NewReader(rec.FundingTx)) == nil {
			market.FundingFee = rate * payment.VSize(&tx)
		}
		if _, err := e.m.SetMarket(rec.ID, func(mk *payment.EscrowMarket) error { *mk = market; return nil }); err != nil {
			return err
		}
		note := &contract.EscrowNote{ContractID: ct.ID, EscrowID: rec.ID, Contract: ct.Marshal(), Payload: offer.Encode()}
		if _, err := contract.CallEscrow(ctx, e.n.host, arb, contract.EscrowRegister, note.Marshal()); err != nil {
			return fmt.Errorf("register the escrow with the arbiter: %w", err)
		}
		return nil
	}
	rec, offer, err := e.m.OpenEscrow(ctx, payment.EscrowParams{
		Peer:          p.Seller.String(),
		Seller:        payment.EscrowTerms{Key: st.Key, KeyIndex: st.KeyIndex, PayoutScript: st.PayoutScript},
		Arbiter:       payment.EscrowTerms{Key: ao.Key, KeyIndex: ao.KeyIndex},
		Amount:        p.Total(),
		Delay:         delay,
		FeeRate:       rate,
		Extra:         extra,
		BeforePublish: register,
	})
	if err != nil {
		return nil, fmt.Errorf("fund escrow: %w", err)
	}
	e.bind(ct.ID, rec.ID)
	e.n.log.Info("escrow funded for a contract", "escrow", rec.ID, "contract", ct.ID, "peer", p.Seller, "arbiter", arb,
		"amount_sats", rec.Amount, "arbiter_fee_sats", ao.FeeSat, "delay", rec.Delay)
	return offer.Encode(), nil
}

// arbiterOffer asks arb for its terms and checks them.
func (e *escrowNode) arbiterOffer(ctx context.Context, arb peer.ID) (*contract.ArbiterOffer, error) {
	b, err := contract.CallEscrow(ctx, e.n.host, arb, contract.EscrowAskTerms, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not an arbiter this node can use: %v", api.ErrRefused, arb, err)
	}
	ao, err := contract.OpenArbiterOffer(b, time.Now())
	if err != nil {
		return nil, fmt.Errorf("arbiter %s: %w", arb, err)
	}
	if ao.Arbiter != arb {
		return nil, fmt.Errorf("%w: arbiter offer of %s came from %s", contract.ErrWrongKey, ao.Arbiter, arb)
	}
	e.fees.Store(arb.String(), int64(ao.FeeSat))
	if int64(ao.FeeSat) > e.n.cfg.Arbiter.MaxFeeSat {
		return nil, fmt.Errorf("%w: arbiter %s charges %d sats, arbiter.max_fee_sat is %d", api.ErrRefused, arb, ao.FeeSat, e.n.cfg.Arbiter.MaxFeeSat)
	}
	return ao, nil
}

// accept is the seller's side: the escrow must pay our payout on release,
// hold at least the contract's price, be known to the arbiter the request
// names, and be funded before the job starts.
func (e *escrowNode) accept(ctx context.Context, buyer peer.ID, ct *contract.Contract, msg []byte) error {
	// Long enough for the job to end and be released before the
	// arbiter's key counts; no longer than this seller lets its money wait.
	need := escrowNeeds(ct.Proposal.Request.Duration, e.n.payCfg.Confirmations)
	rec, err := e.m.AcceptEscrowWithin(ctx, buyer.String(), msg, need-escrowDelaySlack, e.n.cfg.Arbiter.MaxDelay+escrowDelaySlack)
	if err != nil {
		return err
	}
	if rec.Role != payment.RoleSeller {
		return fmt.Errorf("escrow %s does not name our seller key", rec.ID)
	}
	if rec.Amount < ct.Proposal.Total() {
		return fmt.Errorf("escrow %s holds %d sats, the contract costs %d", rec.ID, rec.Amount, ct.Proposal.Total())
	}
	if other := e.escrowOf(ct.ID); other != "" && other != rec.ID {
		return fmt.Errorf("contract %s already has escrow %s", ct.ID, other)
	}
	arb, err := peer.Decode(ct.Proposal.Request.Escrow)
	if err != nil {
		return err
	}
	note := &contract.EscrowNote{ContractID: ct.ID, EscrowID: rec.ID}
	if _, err := contract.CallEscrow(ctx, e.n.host, arb, contract.EscrowCheck, note.Marshal()); err != nil {
		return fmt.Errorf("the arbiter does not vouch for escrow %s: %w", rec.ID, err)
	}
	if _, err := e.m.SetMarket(rec.ID, func(mk *payment.EscrowMarket) error {
		*mk = payment.EscrowMarket{Contract: ct.ID, Buyer: buyer.String(), Seller: ct.Proposal.Seller.String(), Arbiter: arb.String()}
		return nil
	}); err != nil {
		return err
	}
	e.bind(ct.ID, rec.ID)
	e.poke()
	e.n.log.Info("escrow accepted: waiting for its confirmations", "escrow", rec.ID, "contract", ct.ID, "peer", buyer, "amount_sats", rec.Amount)
	// As a channel's funding: the escrow may take contract.funding_wait
	// to confirm.
	wait := e.n.cfg.Contract.FundingWait
	deadline := time.Now().Add(wait)
	for {
		r, err := e.m.Escrow(rec.ID)
		if err != nil {
			return err
		}
		switch r.State {
		case payment.EscrowFunded:
			return nil
		case payment.EscrowPending:
		default:
			return fmt.Errorf("escrow %s is %s", r.ID, r.State)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("escrow %s not confirmed within %s (contract.funding_wait)", r.ID, wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// handle answers an escrow request from a peer.
func (e *escrowNode) handle(ctx context.Context, from peer.ID, typ byte, b []byte) ([]byte, error) {
	switch typ {
	case contract.EscrowAskTerms:
		return e.arbiterTerms()
	case contract.EscrowDisputeMsg:
		return nil, e.takeDispute(ctx, from, b)
	}
	n, err := contract.UnmarshalEscrowNote(b)
	if err != nil {
		return nil, err
	}
	switch typ {
	case contract.EscrowRegister:
		return nil, e.register(ctx, from, n)
	case contract.EscrowCheck:
		return nil, e.check(from, n)
	case contract.EscrowRelease:
		return e.takeRelease(ctx, from, n)
	case contract.EscrowDecision:
		return nil, e.takeDecision(ctx, from, n)
	}
	return nil, fmt.Errorf("unknown escrow request %d", typ)
}

// takeDecision is a party's side of the arbiter's decision: its signature
// of the payout, completed here once the delay is reached (act).
func (e *escrowNode) takeDecision(ctx context.Context, from peer.ID, n *contract.EscrowNote) error {
	r, err := e.m.Escrow(n.EscrowID)
	if err != nil {
		return err
	}
	if r.Market == nil || r.Market.Arbiter != from.String() {
		return errors.New("only the escrow's arbiter decides it")
	}
	if n.Split > 0 {
		if _, err := e.m.SetSplit(r.ID, int64(n.Split)); err != nil {
			return err
		}
	}
	r, err = e.m.AddSignature(ctx, from.String(), n.Payload)
	if err != nil {
		return err
	}
	kind, _ := arbiterSig(r)
	e.n.log.Info("escrow: the arbiter decided", "escrow", r.ID, "contract", r.Market.Contract, "kind", kind.String(), "delay", r.Delay)
	e.poke()
	return nil
}

// resultDigests are the digests of the results this node holds for a
// contract it bought ("name=sha256:<hex>").
func (n *Node) resultDigests(contractID string) []string {
	var out []string
	for _, name := range []string{contract.OutputStdout, contract.OutputStderr, contract.OutputTar} {
		f, err := os.Open(filepath.Join(n.ResultDir(), contractID, name))
		if err != nil {
			continue
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err == nil {
			out = append(out, name+"=sha256:"+hex.EncodeToString(h.Sum(nil)))
		}
	}
	return out
}
