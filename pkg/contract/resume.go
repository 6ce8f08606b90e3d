package contract

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/blackbox-market/blackbox/pkg/wire"
)

// A job outlives its stream and both daemons (job protocol 1.4.0).
//
//   - The seller's job runs in a container that belongs to containerd, not
//     to the daemon (the sandbox's logger and Reattach). A seller that
//     stops for an upgrade (Close: SIGTERM) leaves its 1.4.0 jobs running
//     when it can re-attach them (a Reattacher runner and a RestartGrace);
//     a crash leaves them running too. At the next Start, a running
//     contract whose last sign of life is within RestartGrace is resumed:
//     the job is re-attached, its streams re-read from the start of the
//     logger's files (so the receipt's digests cover everything), billing
//     goes on from the contract's start, and the seller waits for the
//     buyer. Any other running contract fails as before, and its container
//     is removed.
//   - The seller spools each output it sends (stdout, stderr, out.tar) to a
//     file, so that a buyer that comes back gets what it lacks.
//   - The buyer resumes: when the stream breaks (or its own daemon
//     restarted, from its persisted state), it dials the seller again, for
//     up to RestartGrace, with a new 1.4.0 stream whose first frame is
//     jResume: the contract ID and how many bytes of each output it holds.
//     The seller checks that the stream's peer (authenticated by the
//     connection's handshake, as every job stream's) is the contract's
//     buyer, answers jResumed (the sats it holds for the contract), sends
//     the missing bytes and a heartbeat of the intervals delivered, and
//     the job goes on as if nothing happened: the buyer pays what the
//     heartbeat asks, and results, bill and receipt come as usual.
//   - While no buyer is attached, a payment that falls due is waited for
//     until RestartGrace after the stream was lost (or the seller
//     restarted): the seller risks at most that; then the job stops,
//     unpaid, as before. A restart longer than the grace ends the contract
//     as before a restart: stopped, settled for what was paid.

// Job protocol frames of 1.4.0.
const (
	jResume  byte = 16 // buyer: the encoded Resume, first frame of a resumed stream
	jResumed byte = 30 // seller: uvarint, the cumulative sats it holds for the contract
)

// resumes reports whether a job stream of proto may be resumed.
func resumes(proto protocol.ID) bool { return proto == JobProtocol }

// DefaultRestartGrace is how long a running job waits for its daemons to
// come back (contract.restart_grace).
const DefaultRestartGrace = 2 * time.Minute

// Resume is the buyer's jResume frame.
type Resume struct {
	ContractID string
	// Have is how many bytes of stdout, stderr and out.tar the buyer
	// holds: the seller sends from there.
	Have [3]uint64
}

// maxResumeSize bounds a jResume frame.
const maxResumeSize = 256

// Resume frame fields.
const (
	rsContract protowire.Number = 1 + iota
	rsStdout
	rsStderr
	rsOutput
)

var resumeSchema = wire.Schema{Max: maxResumeSize, Ordered: true, Fields: []wire.Spec{
	rsContract: bytesField, rsStdout: varintField, rsStderr: varintField, rsOutput: varintField,
}}

func marshalResume(r Resume) []byte {
	var w enc
	w.String(rsContract, r.ContractID)
	for i, n := range r.Have {
		w.Uint(rsStdout+protowire.Number(i), n)
	}
	return w.B
}

// maxOutputOffset bounds the offsets a Resume may name (no output is a
// petabyte).
const maxOutputOffset = 1 << 50

// unmarshalResume decodes a buyer's jResume frame strictly: unknown or
// repeated fields, trailing bytes, a contract ID that is not one this
// package makes, offsets beyond any output are ErrMalformed.
func unmarshalResume(b []byte) (Resume, error) {
	fields, err := decode("resume", &resumeSchema, b)
	if err != nil {
		return Resume{}, err
	}
	var r Resume
	for _, f := range fields {
		switch f.Num {
		case rsContract:
			if r.ContractID, err = f.Text(64); err != nil {
				return Resume{}, fmt.Errorf("decode resume: %w", wireErr(err))
			}
		case rsStdout, rsStderr, rsOutput:
			v, err := f.Uint(maxOutputOffset)
			if err != nil {
				return Resume{}, fmt.Errorf("decode resume: %w", wireErr(err))
			}
			r.Have[f.Num-rsStdout] = v
		}
	}
	if !validContractID(r.ContractID) {
		return Resume{}, fmt.Errorf("decode resume: %w: contract id %q", ErrMalformed, printable(r.ContractID))
	}
	return r, nil
}

// validContractID: a contract ID is the hex of a proposal's hash.
func validContractID(id string) bool {
	if len(id) < 16 || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// resumeState is what a side keeps, beyond the contract's record, to
// resume a running job after its daemon restarted (bucket
// contract_resume, key role prefix + contract ID).
type resumeState struct {
	// Proto is the job stream's protocol.
	Proto protocol.ID `json:"proto"`
	// Alive is the last time the daemon was known to run the job; the
	// restart grace counts from it.
	Alive time.Time `json:"alive"`
	// Seller: the bytes of image and inputs it received (billed).
	RxBytes int64 `json:"rx_bytes,omitempty"`
	// Seller: the job's inputs (kept while it runs on); of a service, the
	// image the job runs (its restart policy runs it again after a
	// restart), and the bytes forwarded to and from the buyer so far (at
	// the last record).
	// Buyer, of a service: the bytes its forwards read from and wrote to
	// the seller so far.
	Image    string `json:"image,omitempty"`
	InputDir string `json:"input_dir,omitempty"`
	FwOut    int64  `json:"fw_out,omitempty"`
	FwIn     int64  `json:"fw_in,omitempty"`
	// Buyer: the bytes of image and inputs it sent, the egress price the
	// seller said, what earlier attempts of the job paid, and whether a
	// relayed connection may carry the stream.
	SentBytes   uint64 `json:"sent_bytes,omitempty"`
	EgressPrice uint64 `json:"egress_price,omitempty"`
	Base        int64  `json:"base,omitempty"`
	Limited     bool   `json:"limited,omitempty"`
	// Addrs are the seller's addresses the buyer reached it at.
	Addrs []string `json:"addrs,omitempty"`
}

const bucketResume = "contract_resume"

func saveResume(st Store, role Role, id string, rs resumeState) error {
	return st.Update(func(kv KV) error { return putJSON(kv, bucketResume, role.prefix()+id, rs) })
}

func loadResume(st Store, role Role, id string) (*resumeState, error) {
	var rs *resumeState
	err := st.View(func(kv KV) error {
		b := kv.Get(bucketResume, role.prefix()+id)
		if b == nil {
			return nil
		}
		rs = &resumeState{}
		return json.Unmarshal(b, rs)
	})
	return rs, err
}

func dropResume(st Store, role Role, id string) error {
	return st.Update(func(kv KV) error { return kv.Delete(bucketResume, role.prefix()+id) })
}

// touchResume records that the daemon still runs the jobs of ids.
func touchResume(st Store, role Role, ids []string, now time.Time) error {
	return touchResumeCounts(st, role, ids, now, nil)
}

// fwCounts are a service contract's forwarded bytes: out to and in from
// the other side.
type fwCounts struct{ out, in int64 }

// touchResumeCounts is touchResume that also records the forwarded bytes
// of the service contracts in fw.
func touchResumeCounts(st Store, role Role, ids []string, now time.Time, fw map[string]fwCounts) error {
	if len(ids) == 0 {
		return nil
	}
	return st.Update(func(kv KV) error {
		for _, id := range ids {
			b := kv.Get(bucketResume, role.prefix()+id)
			if b == nil {
				continue
			}
			var rs resumeState
			if err := json.Unmarshal(b, &rs); err != nil {
				return err
			}
			rs.Alive = now
			if n, ok := fw[id]; ok {
				rs.FwOut, rs.FwIn = n.out, n.in
			}
			if err := putJSON(kv, bucketResume, role.prefix()+id, rs); err != nil {
				return err
			}
		}
		return nil
	})
}

// Resumable returns the role's running contracts that a daemon starting
// at now resumes: those with a resume state (a 1.4.0 job) whose last sign
// of life is less than grace ago. The node asks it before the sandbox
// starts, so that the sandbox keeps their containers (grace 0: none).
func Resumable(st Store, role Role, grace time.Duration, now time.Time) (map[string]bool, error) {
	out := map[string]bool{}
	if grace <= 0 {
		return out, nil
	}
	err := st.View(func(kv KV) error {
		return kv.ForEach(bucketContracts, role.prefix(), func(k string, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("contract %s: decode: %w", k, err)
			}
			if r.State != StateRunning {
				return nil
			}
			b := kv.Get(bucketResume, k)
			if b == nil {
				return nil
			}
			var rs resumeState
			if err := json.Unmarshal(b, &rs); err != nil {
				return fmt.Errorf("contract %s: resume state: %w", k, err)
			}
			alive := rs.Alive
			if r.Updated.After(alive) {
				alive = r.Updated
			}
			if now.Sub(alive) < grace && resumes(rs.Proto) {
				out[r.ID] = true
			}
			return nil
		})
	})
	return out, err
}

// recoverKeeping is Machine.Recover for a daemon that resumes the running
// contracts in keep: they stay running; every other lost one fails.
func (m *Machine) recoverKeeping(keep map[string]bool, role Role) ([]*Record, error) {
	recs, err := m.List(0)
	if err != nil {
		return nil, err
	}
	// The other role's resumable contracts are its engine's to resume
	// (both engines share the store); if it never starts, their timeouts
	// end them.
	other := map[string]bool{}
	err = m.store.View(func(kv KV) error {
		return kv.ForEach(bucketResume, "", func(k string, _ []byte) error { other[k] = true; return nil })
	})
	if err != nil {
		return nil, err
	}
	var moved []*Record
	for _, r := range recs {
		lost := r.State == StateRunning || (r.Role == RoleBuyer && r.State == StateFunded)
		if !lost || (r.Role == role && r.State == StateRunning && keep[r.ID]) ||
			(r.Role != role && r.State == StateRunning && other[r.key()]) {
			continue
		}
		nr, err := m.Move(r.Role, r.ID, StateFailed, "node restarted", nil)
		if err != nil {
			return moved, err
		}
		moved = append(moved, nr)
	}
	more, err := m.Advance()
	return append(moved, more...), err
}

// Reattacher is what a Runner may also do: follow a job a previous
// process started and left running.
type Reattacher interface {
	// Reattach follows the job of spec.ContractID, left running (or since
	// ended) by a previous process, to its end, and returns its result as
	// Run does; its streams are written to spec's writers from their
	// start. Only the contract ID, the writers and OnStart (told the job's
	// init process, as Run does) of spec are used.
	Reattach(ctx context.Context, spec RunSpec) (*RunResult, error)
	// Adopted lists the contract IDs of the jobs kept for Reattach.
	Adopted(ctx context.Context) []string
	// Discard removes a kept job nobody will re-attach.
	Discard(ctx context.Context, contractID string) error
}

// ErrDetach is the cause a job's context is cancelled with to leave the
// job running for the next start; a Runner that can, returns ErrDetached.
var ErrDetach = errors.New("detach: the job runs on for the next start")

// ErrDetached is what Run and Reattach return for a job left running.
var ErrDetached = errors.New("job detached, still running")

// errJobDetached ends a seller's job stream whose job was left running:
// the contract stays running, for the next start.
var errJobDetached = errors.New("job left running for the next start")
