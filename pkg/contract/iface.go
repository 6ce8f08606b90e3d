package contract

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Runner is what the seller needs from the sandbox.
type Runner interface {
	// ImportImage reads an image tarball whose sha256 must equal digest
	// ("sha256:<hex>") and returns the name RunSpec.Image takes. An error
	// wraps ErrBadImage when the tarball is not an image (the buyer's
	// fault), anything else is the seller's.
	ImportImage(ctx context.Context, r io.Reader, digest string) (string, error)
	// Pull fetches an image by reference and returns its name.
	Pull(ctx context.Context, ref string) (string, error)
	// Run runs spec to the end. Cancelling ctx kills the job and Run still
	// returns its result (Reason "killed"). An error means the job never ran.
	Run(ctx context.Context, spec RunSpec) (*RunResult, error)
}

// RunSpec is one job as the contract grants it.
type RunSpec struct {
	ContractID string
	Image      string
	Args       []string
	Env        []string
	// InputDir holds the verified input files by name (empty: none); the
	// runner makes them visible to the job (read-only at /in).
	InputDir string
	// Runtime is the sandbox runtime the contract agreed: the request's,
	// which the seller checked is among its offer's runtimes; empty when the
	// request named none, and the seller runs its default, also offered.
	Runtime   string
	Resources offer.Resources
	WallClock time.Duration
	// Stdout, Stderr and Output (the tar of /out) stream to the buyer.
	Stdout, Stderr, Output io.Writer
	// OnStart, if set, is told the pid of the job's init process once it
	// started (a service's port is reached in its network namespace).
	OnStart func(pid int)
}

// RunResult is how a job ended.
type RunResult struct {
	ExitCode int
	Reason   string // exited, timeout, oom, killed, error
	Usage    Usage
	Error    string
}

// PaymentReceiver is the seller's side of the payment channel.
type PaymentReceiver interface {
	// Terms returns the seller's payment terms for an acceptance (opaque
	// here: the Payer on the other side decodes them).
	Terms() ([]byte, error)
	// AcceptOpen verifies and records the channel a buyer funded (msg is
	// what the buyer's Payer.Prepare returned). Accepting the same channel
	// again succeeds.
	AcceptOpen(ctx context.Context, buyer peer.ID, msg []byte) error
	// AcceptUpdate verifies and persists a payment update for contractID
	// and returns the cumulative amount (sats) it now holds for that
	// contract. Only after it returns may the seller count the payment.
	AcceptUpdate(ctx context.Context, buyer peer.ID, contractID string, msg []byte) (int64, error)
}

// Payer is the buyer's side of the payment channel.
type Payer interface {
	// Prepare makes sure a channel to seller, under the seller's terms,
	// can pay amount more sats (opening one or reusing an open one) and
	// returns the open message to hand the seller (nil when reused).
	Prepare(ctx context.Context, seller peer.ID, terms []byte, amount int64) ([]byte, error)
	// Pay signs a payment bringing contractID's cumulative total to total
	// sats and returns the update to send. It is idempotent: a total
	// already paid returns the latest update again.
	Pay(ctx context.Context, seller peer.ID, contractID string, total int64) ([]byte, error)
}

// AsyncPayer is what a Payer may also do: return the update to send while
// it is still being persisted, so that its write overlaps the trip to the
// seller and the seller's check and write. The update only pays the seller
// more than the last durable one; the buyer counts it paid (and pays the
// contract again) only once durable returned nil.
type AsyncPayer interface {
	PayAsync(ctx context.Context, seller peer.ID, contractID string, total int64) (msg []byte, durable func() error, err error)
}

// ContractPayer is what a Payer may also do: reserve each contract's
// worst-case total on the channel it picks, so that contracts running at
// once on one channel never promise more than it holds (one that does not
// fit uses or opens another), and free what a contract did not spend when
// it ends. The buyer then calls PrepareContract instead of Prepare, and
// Release once the contract has ended (not when the node stops with it
// running: it resumes on the same channel).
type ContractPayer interface {
	// PrepareContract is Prepare for contractID, which may pay up to
	// amount sats in all; it returns the open message of the channel the
	// contract reserved (for a reused open channel too: the seller checks
	// the contract fits before it sets up the job).
	PrepareContract(ctx context.Context, seller peer.ID, contractID string, terms []byte, amount int64) ([]byte, error)
	// Release frees contractID's reservation.
	Release(seller peer.ID, contractID string)
}

// Blobs is where a buyer keeps the image tarballs and input files it ships,
// by content digest ("sha256:<hex>").
type Blobs interface {
	Open(digest string) (io.ReadCloser, int64, error)
}

// Clock is time for the engines; tests may run it faster.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now implements Clock.
func (SystemClock) Now() time.Time { return time.Now() }

// After implements Clock.
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// DirBlobs keeps blobs as files named by their hex digest in a directory.
type DirBlobs string

var _ Blobs = DirBlobs("")

// Open implements Blobs.
func (d DirBlobs) Open(digest string) (io.ReadCloser, int64, error) {
	if !isDigest(digest) {
		return nil, 0, fmt.Errorf("open blob: bad digest %q", digest)
	}
	f, err := os.Open(filepath.Join(string(d), digest[7:]))
	if err != nil {
		return nil, 0, fmt.Errorf("open blob %s: %w", digest, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open blob %s: %w", digest, err)
	}
	return f, st.Size(), nil
}

// Add copies r into the directory and returns its digest and size.
func (d DirBlobs) Add(r io.Reader) (string, int64, error) {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return "", 0, fmt.Errorf("add blob: %w", err)
	}
	tmp, err := os.CreateTemp(string(d), ".tmp-*")
	if err != nil {
		return "", 0, fmt.Errorf("add blob: %w", err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), r)
	if err == nil {
		err = tmp.Close()
	} else {
		tmp.Close()
	}
	if err != nil {
		return "", 0, fmt.Errorf("add blob: %w", err)
	}
	dg := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp.Name(), filepath.Join(string(d), dg[7:])); err != nil {
		return "", 0, fmt.Errorf("add blob: %w", err)
	}
	return dg, n, nil
}

// ErrBadImage is what a Runner's ImportImage wraps when the buyer's
// tarball is not an image it can run.
var ErrBadImage = errors.New("bad image")

// errStop is an internal sentinel for loops.
var errStop = errors.New("stop")

func slicesSortJobs(js []*JobStatus) {
	sort.SliceStable(js, func(a, b int) bool { return js[a].Created.Before(js[b].Created) })
}
