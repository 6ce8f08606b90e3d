package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/meter"
	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/libp2p/go-libp2p/core/peer"
)

// This file adapts the concrete subsystems to the small interfaces the
// contract engines consume.

var (
	_ contract.Runner          = sandboxRunner{}
	_ contract.ImageCache      = sandboxRunner{}
	_ contract.ContainerDialer = sandboxRunner{}
	_ contract.PaymentReceiver = (*channelReceiver)(nil)
	_ contract.Payer           = channelPayer{}
)

// sandboxRunner runs contracted jobs in the sandbox, each under the
// runtime its contract agreed, or defaultRuntime (one the node offers)
// when the contract names none.
type sandboxRunner struct {
	sb             *sandbox.Sandbox
	defaultRuntime string
}

func (r sandboxRunner) ImportImage(ctx context.Context, rd io.Reader, digest string) (string, error) {
	img, err := r.sb.ImportImage(ctx, rd, digest)
	if errors.Is(err, sandbox.ErrBadImage) || errors.Is(err, sandbox.ErrDigestMismatch) {
		// The buyer's fault (a tarball that is not an image, or not the
		// digest its contract names): the contract engine tells it so.
		err = badImage{err}
	}
	return img.Name, err
}

// badImage marks a sandbox error as contract.ErrBadImage; its text is the
// sandbox's.
type badImage struct{ error }

func (e badImage) Unwrap() error        { return e.error }
func (e badImage) Is(target error) bool { return target == contract.ErrBadImage }

// CachedImage makes the seller tell a buyer (job protocol 1.2.0) not to
// send an image it holds.
func (r sandboxRunner) CachedImage(ctx context.Context, digest string) (string, bool) {
	img, ok := r.sb.CachedImport(ctx, digest)
	return img.Name, ok
}

// DialContainer reaches a service's port in its job's own network
// namespace (the forward protocol and the health check).
func (r sandboxRunner) DialContainer(ctx context.Context, pid int, port uint16) (net.Conn, error) {
	return sandbox.DialNetNS(ctx, pid, port)
}

func (r sandboxRunner) Pull(ctx context.Context, ref string) (string, error) {
	img, err := r.sb.Pull(ctx, ref)
	return img.Name, err
}

func (r sandboxRunner) Run(ctx context.Context, spec contract.RunSpec) (*contract.RunResult, error) {
	rt := spec.Runtime
	if rt == "" {
		rt = r.defaultRuntime
	}
	job := sandbox.Job{
		ID:      spec.ContractID,
		Image:   spec.Image,
		Args:    spec.Args,
		Env:     spec.Env,
		Runtime: rt,
		// The seller verified these files against the contract's digests.
		InputDir: spec.InputDir,
		Limits: sandbox.Limits{
			CPUMillis:   int64(spec.Resources.CPUMillis),
			MemoryBytes: int64(spec.Resources.MemoryBytes),
			DiskBytes:   int64(spec.Resources.DiskBytes),
			WallClock:   spec.WallClock,
		},
		Stdout:  spec.Stdout,
		Stderr:  spec.Stderr,
		Output:  spec.Output,
		OnStart: spec.OnStart,
	}
	sctx, done := detachable(ctx)
	defer done()
	res, err := r.sb.Run(sctx, job)
	if errors.Is(err, sandbox.ErrDetached) {
		return nil, contract.ErrDetached
	}
	if err != nil {
		return nil, err
	}
	return runResult(res), nil
}

// runResult is a sandbox result as the contract engine takes it.
func runResult(res *sandbox.Result) *contract.RunResult {
	return &contract.RunResult{
		ExitCode: res.ExitCode,
		Reason:   string(res.Reason),
		Error:    res.Error,
		Usage: contract.Usage{
			CPUTime:    res.CPUTime,
			PeakMemory: uint64(max(res.PeakMemory, 0)),
			OOMKills:   uint64(max(res.OOMKills, 0)),
			Wall:       res.Wall,
		},
	}
}

// channelReceiver is the seller's side of the payment channels.
type channelReceiver struct {
	m *payment.Manager
	// paid, if set, records the contract's acknowledged total before the
	// acknowledgement goes out (the earnings history).
	paid func(contractID string, cumulative int64)
}

func (r *channelReceiver) Terms() ([]byte, error) {
	t, err := r.m.SellerTerms()
	if err != nil {
		return nil, err
	}
	return t.Encode(), nil
}

// AcceptOpen records the channel; whether a contract starts on it before
// its funding confirms is Admit's question (contract.FundingGate).
func (r *channelReceiver) AcceptOpen(ctx context.Context, buyer peer.ID, msg []byte) error {
	if r.knownOpen(buyer, msg) {
		// A contract reusing the buyer's open channel names it (for the
		// capacity check of Admit): nothing to check on the chain again.
		return nil
	}
	_, err := r.m.AcceptOpen(ctx, buyer.String(), msg)
	return err
}

// knownOpen reports whether msg opens a channel of buyer's we hold open.
func (r *channelReceiver) knownOpen(buyer peer.ID, msg []byte) bool {
	o, err := payment.DecodeOpenRequest(msg)
	if err != nil {
		return false
	}
	id, err := o.ChannelID()
	if err != nil {
		return false
	}
	c, err := r.m.Channel(id)
	return err == nil && c.Peer == buyer.String() && c.Role == payment.RoleSeller && c.State == payment.StateOpen
}

var _ contract.FundingGate = (*channelReceiver)(nil)

var _ contract.OpenHintReader = (*channelReceiver)(nil)

// ReadsOpenHints implements contract.OpenHintReader: the payment manager
// reads an open's input hints (payment/openhints.go).
func (r *channelReceiver) ReadsOpenHints() bool { return true }

// Admit implements contract.FundingGate with the payment manager's
// zero-confirmation book (payment/zeroconf.go).
func (r *channelReceiver) Admit(ctx context.Context, buyer peer.ID, contractID string, open []byte, amount int64) (contract.Funding, error) {
	if len(open) == 0 {
		// An older buyer reusing an open channel it does not name
		// (payment/reserverestore.go).
		if _, err := r.m.ReserveUnnamed(buyer.String(), contractID, amount); err != nil {
			return contract.Funding{}, err
		}
		return contract.Funding{Ready: true}, nil
	}
	o, err := payment.DecodeOpenRequest(open)
	if err != nil {
		return contract.Funding{}, err
	}
	id, err := o.ChannelID()
	if err != nil {
		return contract.Funding{}, err
	}
	c, err := r.m.Channel(id)
	if err != nil || c.Peer != buyer.String() {
		return contract.Funding{}, fmt.Errorf("admit contract %s: channel %s is not %s's", contractID, id, buyer)
	}
	if err := payment.Unusable(c); err != nil {
		return contract.Funding{}, fmt.Errorf("admit contract %s: %w", contractID, err)
	}
	// The contract's worst case must fit beside what the channel paid
	// and what its other running contracts may still pay: refused here,
	// before the job is set up, not at its first payment.
	if err := r.m.ReserveCapacity(id, contractID, amount); err != nil {
		return contract.Funding{}, err
	}
	st, err := r.m.Admit(ctx, id, contractID, amount)
	if err != nil {
		r.m.ReleaseCapacity(contractID)
		return contract.Funding{}, err
	}
	return contract.Funding{
		Confirmations: uint32(max(st.Confirmations, 0)), Needed: uint32(st.Needed),
		Ready: st.Ready, ZeroConf: st.ZeroConf, NextBlockSeconds: st.NextBlock.Seconds(),
		ExposureSat: st.Exposure, MaxSat: st.Max, Why: st.Why,
	}, nil
}

// Release implements contract.FundingGate.
func (r *channelReceiver) Release(contractID string) {
	r.m.Release(contractID)
	r.m.ReleaseCapacity(contractID)
}

var _ contract.CapacityRestorer = (*channelReceiver)(nil)

// RestoreCapacity implements contract.CapacityRestorer.
func (r *channelReceiver) RestoreCapacity(buyer peer.ID, contractID string, amount int64) {
	r.m.RestoreCapacity(buyer.String(), contractID, amount)
}

func (r *channelReceiver) AcceptUpdate(ctx context.Context, buyer peer.ID, contractID string, msg []byte) (int64, error) {
	// The channel a payment names holds the contract's reservation: an
	// older buyer's contract was reserved on the channel it was guessed
	// to pay on, and follows it here, or is refused if this one cannot
	// carry it.
	if u, err := payment.DecodeUpdate(msg); err == nil {
		if err := r.m.FollowPayment(contractID, u.ChannelID.String()); err != nil {
			return 0, err
		}
	}
	u, err := r.m.AcceptUpdateInOrder(ctx, buyer.String(), contractID, msg)
	if err != nil {
		return 0, err
	}
	if r.paid != nil {
		r.paid(contractID, u.ContractAmount)
	}
	return u.ContractAmount, nil
}

// channelPayer is the buyer's side (payment.Payer) with peer IDs.
type channelPayer struct{ p *payment.Payer }

func (c channelPayer) Prepare(ctx context.Context, seller peer.ID, terms []byte, amount int64) ([]byte, error) {
	req, err := c.p.EnsureChannel(ctx, seller.String(), terms, amount)
	if err != nil || req == nil {
		return nil, err
	}
	return req.Encode(), nil
}

var _ contract.ContractPayer = channelPayer{}

// PrepareContract implements contract.ContractPayer.
func (c channelPayer) PrepareContract(ctx context.Context, seller peer.ID, contractID string, terms []byte, amount int64) ([]byte, error) {
	req, err := c.p.EnsureContract(ctx, seller.String(), contractID, terms, amount)
	if err != nil {
		return nil, err
	}
	return req.Encode(), nil
}

var _ contract.OpenHinter = channelPayer{}

// WithOpenHints implements contract.OpenHinter: the funding's input
// heights from the wallet.
func (c channelPayer) WithOpenHints(open []byte) []byte { return c.p.WithInputHeights(open) }

// Release implements contract.ContractPayer.
func (c channelPayer) Release(_ peer.ID, contractID string) { c.p.Release(contractID) }

var _ contract.CapacityRestorer = channelPayer{}

// RestoreCapacity implements contract.CapacityRestorer.
func (c channelPayer) RestoreCapacity(seller peer.ID, contractID string, amount int64) {
	c.p.Restore(seller.String(), contractID, amount)
}

var _ contract.HeldLearner = channelPayer{}

// Reestablish implements contract.HeldLearner.
func (c channelPayer) Reestablish(ctx context.Context, seller peer.ID, held []byte) (string, error) {
	return c.p.Reestablish(ctx, seller.String(), held)
}

// SeenClose implements contract.CloseLearner.
func (c channelPayer) SeenClose(ctx context.Context, seller peer.ID, tx []byte) (string, error) {
	return c.p.SeenClose(ctx, seller.String(), tx)
}

func (c channelPayer) Pay(ctx context.Context, seller peer.ID, contractID string, total int64) ([]byte, error) {
	u, err := c.p.Pay(ctx, seller.String(), contractID, total)
	if err != nil {
		return nil, err
	}
	return u.Encode(), nil
}

var _ contract.AsyncPayer = channelPayer{}

// PayAsync implements contract.AsyncPayer.
func (c channelPayer) PayAsync(ctx context.Context, seller peer.ID, contractID string, total int64) ([]byte, func() error, error) {
	u, durable, err := c.p.PayAsync(ctx, seller.String(), contractID, total)
	if err != nil {
		return nil, nil, err
	}
	return u.Encode(), durable, nil
}

// toResources converts the meter's capacity to an offer's resources.
func toResources(c meter.Capacity) offer.Resources {
	nonneg := func(v int64) uint64 {
		if v < 0 || v == meter.Unlimited {
			return 0
		}
		return uint64(v)
	}
	return offer.Resources{
		CPUMillis:    nonneg(c.MilliCPU),
		MemoryBytes:  nonneg(c.Memory),
		DiskBytes:    nonneg(c.Disk),
		BandwidthBps: nonneg(c.Bandwidth),
	}
}
